package repo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

func manyNodes(n int) []*Node {
	nodes := make([]*Node, n)
	for i := range nodes {
		nodes[i] = &Node{Name: fmt.Sprintf("file%05d", i), Type: NodeFile, Mode: 0o644, ModTime: time.Unix(1700000000, 0).UTC(),
			Xattrs: map[string][]byte{"user.tag": []byte(fmt.Sprintf("value %d of a listing that needs parts", i))}}
	}
	return nodes
}

// TestSplitTree: a listing larger than treePartBytes is stored as a head
// and parts, loads back whole and in order, splits the same way every
// time, and keeps its parts through prune (a changed listing shares the
// unchanged parts, and a forgotten snapshot's head must not take them
// along) and check.
func TestSplitTree(t *testing.T) {
	defer func(v int) { treePartBytes = v }(treePartBytes)
	treePartBytes = 4 << 10
	ctx := context.Background()
	r := testRepo(t, tierstest.NewMemory(), InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20})

	save := func(nodes []*Node) (id.ID, id.ID) {
		t.Helper()
		x, err := r.SaveTree(ctx, &Tree{Nodes: nodes})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Flush(ctx); err != nil { // each snapshot's blobs in packs of their own
			t.Fatal(err)
		}
		sid, err := r.SaveSnapshot(ctx, &Snapshot{Tree: x, Host: "h", Time: r.Now()})
		if err != nil {
			t.Fatal(err)
		}
		return x, sid
	}
	nodes := manyNodes(300)
	xa, sa := save(nodes)
	head, err := r.LoadBlob(ctx, TreeBlob, xa, nil)
	if err != nil {
		t.Fatal(err)
	}
	var raw struct {
		Version int     `json:"version"`
		Nodes   []*Node `json:"nodes"`
		Parts   []id.ID `json:"parts"`
	}
	if err := json.Unmarshal(head, &raw); err != nil || raw.Version != treeVersionParts || len(raw.Parts) < 3 || len(raw.Nodes) != 0 || len(head) > treePartBytes {
		t.Fatalf("head: version %d, %d parts, %d bytes (%v); want version 2, several parts and no nodes, at most %d bytes", raw.Version, len(raw.Parts), len(head), err, treePartBytes)
	}
	for _, px := range raw.Parts {
		if b, err := r.LoadBlob(ctx, TreeBlob, px, nil); err != nil || len(b) > treePartBytes {
			t.Fatalf("part %s: %d bytes (%v), limit %d", px.Short(), len(b), err, treePartBytes)
		}
	}
	check := func(x id.ID, want int) {
		t.Helper()
		tr, err := r.LoadTree(ctx, x)
		if err != nil {
			t.Fatal(err)
		}
		if len(tr.Nodes) != want {
			t.Fatalf("loaded %d nodes, want %d", len(tr.Nodes), want)
		}
		for i, n := range tr.Nodes {
			if n.Name != fmt.Sprintf("file%05d", i) {
				t.Fatalf("node %d is %q", i, n.Name)
			}
		}
	}
	check(xa, 300)
	if again, err := r.SaveTree(ctx, &Tree{Nodes: manyNodes(300)}); err != nil || again != xa {
		t.Fatalf("the same listing saved again: %s (%v), want %s", again.Short(), err, xa.Short())
	}

	// One more entry: all parts but the last are shared with the first.
	xb, _ := save(manyNodes(301))
	check(xb, 301)
	if err := r.ForgetSnapshot(ctx, sa); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Prune(ctx, PruneOptions{Grace: 0, GraceSet: true}); err != nil {
		t.Fatal(err)
	}
	check(xb, 301)
	rep, err := r.Check(ctx, CheckOptions{})
	if err != nil || !rep.OK() {
		t.Fatalf("check after prune: %v %+v", err, rep)
	}
}

// TestSplitTreeMalformed: heads and parts that break the rules are
// refused, not half-read.
func TestSplitTreeMalformed(t *testing.T) {
	for name, b := range map[string]string{
		"v2 without parts": `{"version":2,"nodes":[]}`,
		"v1 with parts":    `{"version":1,"nodes":[],"parts":["` + id.ID{1}.String() + `"]}`,
		"v2 with nodes":    `{"version":2,"nodes":[{"name":"zzz","type":"file"}],"parts":["` + id.ID{1}.String() + `"]}`,
	} {
		if _, err := decodeTree([]byte(b)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := decodeTree([]byte(`{"version":3,"nodes":[]}`)); !errors.Is(err, ErrUnsupportedVersion) {
		t.Errorf("version 3: %v, want ErrUnsupportedVersion", err)
	}
	// A part that is itself a head.
	ctx := context.Background()
	r := testRepo(t, nil, InitOptions{EC: erasure.Params{K: 2, M: 1}})
	inner, _ := encodeTree(&Tree{Nodes: []*Node{}, Parts: []id.ID{{7}}})
	px, _, err := r.SaveBlob(ctx, TreeBlob, inner, id.ID{})
	if err != nil {
		t.Fatal(err)
	}
	outer, _ := encodeTree(&Tree{Nodes: []*Node{}, Parts: []id.ID{px}})
	hx, _, err := r.SaveBlob(ctx, TreeBlob, outer, id.ID{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.LoadTree(ctx, hx); err == nil || !strings.Contains(err.Error(), "parts of its own") {
		t.Errorf("a part naming parts of its own: %v", err)
	}
}
