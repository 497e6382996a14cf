package repo

import (
	"context"
	"sync"
	"testing"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// afterDataList runs fn once, the first time a listing of the data
// objects has ended: what a writer stores while a long listing runs.
type afterDataList struct {
	tiers.Backend
	once sync.Once
	fn   func()
}

func (b *afterDataList) List(ctx context.Context, t tiers.Type, fn func(tiers.ObjectInfo) error) error {
	err := b.Backend.List(ctx, t, fn)
	if t == tiers.TypeData && b.fn != nil {
		b.once.Do(b.fn)
	}
	return err
}

// TestCheckBesideBackupSeesWholePack: a backup that stores a pack after
// check listed the shards (a listing of a large bucket takes minutes),
// and its index object before check reads the index, leaves check with
// an indexed pack none of whose shards it listed. The pack is whole:
// check must not report it lost, nor repair.
func TestCheckBesideBackupSeesWholePack(t *testing.T) {
	ctx := context.Background()
	mem := tierstest.NewMemory()
	be := &afterDataList{Backend: mem}
	r := testRepo(t, be, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20})
	smallSnapshot(t, r)
	for _, readData := range []bool{false, true} {
		be.once = sync.Once{}
		be.fn = func() {
			w, err := Open(ctx, mem, Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: testKDF})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			b := make([]byte, 30000)
			b[0] = byte(len(b)) + map[bool]byte{false: 1, true: 2}[readData]
			if _, _, err := w.SaveBlob(ctx, DataBlob, b, id.ID{}); err != nil {
				t.Fatal(err)
			}
			if err := w.Flush(ctx); err != nil {
				t.Fatal(err)
			}
		}
		rep, err := r.Check(ctx, CheckOptions{ReadData: readData})
		if err != nil {
			t.Fatalf("check (read data %v) beside a backup: %v, damaged %+v, errors %q", readData, err, rep.Damaged, rep.Errors)
		}
	}
}
