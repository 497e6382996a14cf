package repo

import (
	"context"
	"fmt"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
)

// RepoStats summarises a repository's size.
type RepoStats struct {
	Snapshots int `json:"snapshots"`
	// LogicalBytes is the sum of file sizes over all snapshots.
	LogicalBytes int64 `json:"logical_bytes"`
	// StoredBytes is the size of every stored object.
	StoredBytes    int64 `json:"stored_bytes"`
	DataShardBytes int64 `json:"data_shard_bytes"`
	ParityBytes    int64 `json:"parity_bytes"`
	MetadataBytes  int64 `json:"metadata_bytes"`
	// Chunks counts unique data blobs; UniqueBytes is their plaintext size.
	Chunks      int64  `json:"chunks"`
	TreeBlobs   int64  `json:"tree_blobs"`
	UniqueBytes int64  `json:"unique_bytes"`
	Packs       int64  `json:"packs"`
	PackBytes   int64  `json:"pack_bytes"`
	EC          string `json:"ec"`
}

// Stats measures the repository: object sizes from a listing, blob counts
// from the index, logical size from the snapshots' summaries. Snapshots
// that fail to load are returned as an error alongside the stats of the
// rest.
func (r *Repository) Stats(ctx context.Context) (*RepoStats, error) {
	st := &RepoStats{EC: r.cfg.EC.String()}
	for _, t := range tiers.AllTypes {
		err := r.be.List(ctx, t, func(oi tiers.ObjectInfo) error {
			st.StoredBytes += oi.Size
			if t != tiers.TypeData {
				st.MetadataBytes += oi.Size
				return nil
			}
			_, i, err := erasure.ParseShardName(oi.Handle.Name)
			if err == nil && i >= r.cfg.EC.K {
				st.ParityBytes += oi.Size
			} else {
				st.DataShardBytes += oi.Size
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("list %s in %s: %w", t, r.be.Location(), err)
		}
	}
	var last id.ID
	first := true
	err := r.EachBlob(func(p PackInfo, e BlobEntry) error {
		if !first && e.ID == last {
			return nil // another copy of the same blob
		}
		first, last = false, e.ID
		if e.Type == DataBlob {
			st.Chunks++
			st.UniqueBytes += int64(e.RawLength)
		} else {
			st.TreeBlobs++
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = r.EachPack(func(p PackInfo) error {
		st.Packs++
		st.PackBytes += p.Length
		return nil
	})
	if err != nil {
		return nil, err
	}
	sns, err := r.ListSnapshots(ctx)
	for _, s := range sns {
		st.Snapshots++
		if s.Summary != nil {
			st.LogicalBytes += s.Summary.BytesTotal
		}
	}
	return st, err
}
