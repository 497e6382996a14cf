package repo

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// LoadBlobs delivers every blob the parity rebuild gives back, also when
// another blob of the same call does not decode even from the rebuilt
// pack (an index entry that does not match the pack): one bad entry does
// not cost the files of the others.
func TestLoadBlobsDeliversRebuiltBlobsPastABadOne(t *testing.T) {
	ctx := context.Background()
	be := tierstest.NewMemory()
	r := testRepo(t, be, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20})
	ext := oneBlobFiles(t, r, 8, 20000)
	p := r.Lookup(ext[0].ID)[0].Pack
	var entries []BlobEntry
	for _, e := range ext {
		entries = append(entries, r.Lookup(e.ID)[0].Entry)
	}
	// Blob 0 lies in data shard 0; an entry for it under another ID
	// fails to decode however the pack is read.
	bogus := entries[0]
	bogus.ID[0] ^= 0xff
	if err := be.Remove(ctx, p.ShardHandle(1)); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, e := range entries {
		if int64(e.Offset)+int64(e.Length) > int64(p.ShardSize) {
			want[e.ID.String()] = true // in data shard 1: only the rebuild gives it
		}
	}
	if len(want) == 0 {
		t.Fatal("test set-up: no blob lies in data shard 1")
	}
	got := map[string]bool{}
	err := r.LoadBlobs(ctx, p, append([]BlobEntry{bogus}, entries...), func(e BlobEntry, _ []byte) error {
		got[e.ID.String()] = true
		return nil
	})
	if err == nil {
		t.Error("LoadBlobs reported no error for an entry that does not decode")
	}
	for x := range want {
		if !got[x] {
			t.Errorf("blob %s of the missing data shard was not delivered although the pack rebuilds (error %v)", x[:8], err)
		}
	}
}

// The error of a LoadBlobs call whose blobs do not decode even from the
// rebuilt pack stays one line of bounded length however many they are: a
// restore hands it to every file that lost a blob of the pack.
func TestLoadBlobsErrorIsBoundedWhenManyBlobsAreLost(t *testing.T) {
	ctx := context.Background()
	be := tierstest.NewMemory()
	r := testRepo(t, be, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20})
	ext := oneBlobFiles(t, r, 8, 20000)
	p := r.Lookup(ext[0].ID)[0].Pack
	var bogus []BlobEntry
	for i := range 200 {
		e := r.Lookup(ext[i%len(ext)].ID)[0].Entry
		e.ID[0] ^= 0xff
		e.ID[1] = byte(i)
		bogus = append(bogus, e)
	}
	err := r.LoadBlobs(ctx, p, bogus, func(BlobEntry, []byte) error { return nil })
	if !errors.Is(err, ErrBlobLost) {
		t.Fatalf("LoadBlobs: %v, want ErrBlobLost", err)
	}
	if msg := err.Error(); len(msg) > 1000 || strings.Contains(msg, "\n") {
		t.Errorf("error of %d bytes, %d lines, for 200 lost blobs:\n%.2000s", len(msg), strings.Count(msg, "\n")+1, msg)
	}
}
