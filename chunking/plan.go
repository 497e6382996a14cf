package chunking

import "slices"

// Range is a byte range [Off, Off+Len) of a file.
type Range struct{ Off, Len int64 }

// End returns Off+Len.
func (r Range) End() int64 { return r.Off + r.Len }

// Segment is one independently chunked piece of a file: [Off, Off+Len),
// where Off is a multiple of Config.SegmentSize and Len is at most
// SegmentSize. Data lists the allocated ranges inside the segment, sorted,
// non-overlapping and clipped to it; everything else is a hole and is never
// read.
type Segment struct {
	Off, Len int64
	Data     []Range
}

// End returns Off+Len.
func (s Segment) End() int64 { return s.Off + s.Len }

// PlanData splits a file of size bytes into segments at multiples of
// c.SegmentSize and distributes the allocated ranges data (as returned by
// DataRanges) among them, returning in order only the segments whose Data
// is not empty. A file without holes is described by []Range{{0, size}};
// nil or empty data means the whole file is a hole. data need not be
// sorted or disjoint; ranges are clipped to [0, size) and merged. The
// segments' Data slices share one backing array but have capped capacity.
// Its memory and work depend on data, not on size, so that a file of
// terabytes of holes costs no more than its allocated ranges; the caller
// records the segments between those returned (and after the last) as
// zero. If c.SegmentSize is not positive, DefaultSegmentSize is used
// (such a Config fails Validate anyway).
func (c Config) PlanData(size int64, data []Range) []Segment {
	if size <= 0 {
		return nil
	}
	ss := c.SegmentSize
	if ss <= 0 {
		ss = DefaultSegmentSize
	}
	norm := normalize(size, data)

	// Split ranges at segment boundaries. Pieces come out sorted, so each
	// segment's pieces are contiguous.
	pieces := make([]Range, 0, len(norm)+int(min((size-1)/ss+1, 1<<16)))
	for _, r := range norm {
		for off, end := r.Off, r.End(); off < end; {
			// The end of off's segment, unless past end: computed so
			// that it cannot overflow in a file's last segment below
			// MaxInt64 (a sparse file may be that large).
			e := end
			if base := off / ss * ss; end-base > ss {
				e = base + ss
			}
			pieces = append(pieces, Range{off, e - off})
			off = e
		}
	}

	var segs []Segment
	for lo := 0; lo < len(pieces); {
		off := pieces[lo].Off / ss * ss
		s := Segment{Off: off, Len: min(ss, size-off)}
		p := lo
		for p < len(pieces) && pieces[p].Off < s.End() {
			p++
		}
		s.Data = pieces[lo:p:p]
		segs = append(segs, s)
		lo = p
	}
	return segs
}

// normalize returns data clipped to [0, size), without empty ranges,
// sorted and with overlapping or adjacent ranges merged. It does not modify
// data.
func normalize(size int64, data []Range) []Range {
	out := make([]Range, 0, len(data))
	sorted := true
	for _, r := range data {
		if r.Len <= 0 || r.Off >= size || r.Off < 0 && r.Len <= -r.Off {
			continue
		}
		if r.Off < 0 {
			r.Len += r.Off
			r.Off = 0
		}
		if r.Len > size-r.Off {
			r.Len = size - r.Off
		}
		if n := len(out); n > 0 && r.Off < out[n-1].Off {
			sorted = false
		}
		out = append(out, r)
	}
	if !sorted {
		slices.SortFunc(out, func(a, b Range) int {
			switch {
			case a.Off < b.Off:
				return -1
			case a.Off > b.Off:
				return 1
			}
			return 0
		})
	}
	merged := out[:0]
	for _, r := range out {
		if n := len(merged); n > 0 && r.Off <= merged[n-1].End() {
			if e := r.End(); e > merged[n-1].End() {
				merged[n-1].Len = e - merged[n-1].Off
			}
			continue
		}
		merged = append(merged, r)
	}
	return merged
}
