package tape

import (
	"context"

	"github.com/drpipe/drpipe/tiers"
)

// WriteObjectFileForTest writes one metadata file holding the given
// (handle, content) pairs at the drive's position.
func WriteObjectFileForTest(ctx context.Context, d Drive, objs ...any) error {
	fw := newFileWriter(ctx, d, FileHeader{Kind: KindMeta, FileNo: 2}, MinRecordSize)
	for i := 0; i+1 < len(objs); i += 2 {
		h, data := objs[i].(tiers.Handle), objs[i+1].([]byte)
		if _, err := fw.BeginObject(ObjectHeader{Type: h.Type, Name: h.Name, Size: int64(len(data))}); err != nil {
			return err
		}
		if _, err := fw.Write(data); err != nil {
			return err
		}
	}
	return fw.Finish()
}

// RecordForTest wraps payload in a valid record header (for fuzzing the
// payload parsers past the checksums).
func RecordForTest(k Kind, payload []byte) []byte { return appendRecord(nil, k, 0, payload) }

// RecordSeqForTest is RecordForTest with a record number.
func RecordSeqForTest(k Kind, seq uint32, payload []byte) []byte {
	return appendRecord(nil, k, seq, payload)
}

// SetCatalogLimitForTest lowers the length of the catalog files the writer
// makes and returns the function that puts it back.
func SetCatalogLimitForTest(n int64) func() {
	old := catalogLimit
	catalogLimit = n
	return func() { catalogLimit = old }
}

// CatalogLenForTest is the length of c's catalog file.
func CatalogLenForTest(c *TapeCatalog) int64 { return c.encodedLen() }
