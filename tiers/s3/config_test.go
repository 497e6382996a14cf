package s3

import (
	"strings"
	"testing"
)

// TestRetriesOutOfRange: a negative s3.retries is refused naming the key,
// instead of replaced by the default without a word, and so is a count
// that would retry a failing operation for days.
func TestRetriesOutOfRange(t *testing.T) {
	for _, n := range []int{-1, 101, 1 << 30} {
		if _, err := (Config{Bucket: "backups", MaxAttempts: n}).normalize(); err == nil || !strings.Contains(err.Error(), "s3.retries") {
			t.Errorf("retries %d: %v, want an error naming s3.retries", n, err)
		}
	}
	for n, want := range map[int]int{0: 5, 1: 1, 100: 100} {
		c, err := (Config{Bucket: "backups", MaxAttempts: n}).normalize()
		if err != nil || c.MaxAttempts != want {
			t.Errorf("retries %d: %d attempts, %v; want %d", n, c.MaxAttempts, err, want)
		}
	}
}
