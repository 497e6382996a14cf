// Package versitygw starts a real S3 server, versitygw with its posix
// backend, on a loopback port for drpipe's tests and benchmarks. It is not
// used by the drpipe binary.
//
// Data model: one server process serves one directory; every bucket is a
// sub-directory of it and every object a file below that (objects under
// "p/data/ab/abcd" are files at that path inside the bucket directory), so
// tests can count what a client stored by walking the directory. With
// Options.Versioning the server keeps object versions in a second
// directory, which object lock needs (as on AWS, object lock implies
// versioning).
//
// The binary is found on PATH, then in $DRPIPE_TOOLS, then in
// ~/.cache/drpipe-tools/bin, where scripts/deps.sh (make deps) builds it.
package versitygw

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// Root credentials every server started here accepts.
const (
	AccessKey = "AK"
	SecretKey = "SK"
	// Region is the region the server expects in request signatures.
	Region = "us-east-1"
)

// ErrNotInstalled is returned by Find and Start when the versitygw binary
// cannot be found.
var ErrNotInstalled = errors.New("versitygw not found: run make deps (scripts/deps.sh builds it into $DRPIPE_TOOLS, default ~/.cache/drpipe-tools/bin)")

// Find returns the path of the versitygw binary.
func Find() (string, error) {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	var dirs []string
	if d := os.Getenv("DRPIPE_TOOLS"); d != "" {
		dirs = append(dirs, d)
	}
	if h, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(h, ".cache", "drpipe-tools", "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, "versitygw")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", ErrNotInstalled
}

// Options configure a server.
type Options struct {
	// Versioning enables object versioning (a versions directory next to
	// the data directory); buckets created with object lock are then
	// versioned, as on AWS.
	Versioning bool
	// CertFile and KeyFile make the server speak HTTPS.
	CertFile, KeyFile string
}

// Server is a running versitygw process.
type Server struct {
	// Endpoint is the server's URL, e.g. "http://127.0.0.1:41234".
	Endpoint string
	// Addr is host:port.
	Addr string
	// Dir is the posix backend's root: bucket b is Dir/b.
	Dir string

	cmd  *exec.Cmd
	log  *lockedBuffer
	done chan error
	once sync.Once
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 1<<20 {
		l.b.Reset()
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Start runs versitygw on a free loopback port serving the directory
// work/data (created if needed) and waits until it accepts connections.
// The process is killed when ctx is cancelled or Stop is called.
func Start(ctx context.Context, work string, o Options) (*Server, error) {
	bin, err := Find()
	if err != nil {
		return nil, err
	}
	data := filepath.Join(work, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, fmt.Errorf("versitygw: %w", err)
	}
	var lastErr error
	for range 5 {
		addr, err := freePort()
		if err != nil {
			return nil, fmt.Errorf("versitygw: pick a port: %w", err)
		}
		args := []string{"--port", addr, "--quiet", "--keep-alive"}
		scheme := "http"
		if o.CertFile != "" {
			args = append(args, "--cert", o.CertFile, "--key", o.KeyFile)
			scheme = "https"
		}
		args = append(args, "posix")
		if o.Versioning {
			ver := filepath.Join(work, "versions")
			if err := os.MkdirAll(ver, 0o755); err != nil {
				return nil, fmt.Errorf("versitygw: %w", err)
			}
			args = append(args, "--versioning-dir", ver)
		}
		args = append(args, data)
		s := &Server{Endpoint: scheme + "://" + addr, Addr: addr, Dir: data, log: &lockedBuffer{}, done: make(chan error, 1)}
		s.cmd = exec.CommandContext(ctx, bin, args...)
		s.cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+AccessKey, "ROOT_SECRET_KEY="+SecretKey)
		s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
		if err := s.cmd.Start(); err != nil {
			return nil, fmt.Errorf("versitygw: start %s: %w", bin, err)
		}
		go func() { s.done <- s.cmd.Wait() }()
		if err := s.waitReady(10 * time.Second); err != nil {
			s.Stop()
			lastErr = err
			continue // most likely the port was taken meanwhile
		}
		return s, nil
	}
	return nil, lastErr
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return "127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port), nil
}

func (s *Server) waitReady(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		select {
		case err := <-s.done:
			s.done <- err
			return fmt.Errorf("versitygw exited at start (%v): %s", err, s.log.String())
		default:
		}
		c, err := net.DialTimeout("tcp", s.Addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("versitygw did not listen on %s within %v: %s", s.Addr, limit, s.log.String())
}

// Log returns the server's recent output.
func (s *Server) Log() string { return s.log.String() }

// Stop kills the server and waits for it to exit. It is safe to call more
// than once.
func (s *Server) Stop() {
	s.once.Do(func() {
		if s.cmd.Process != nil {
			_ = s.cmd.Process.Kill()
		}
		<-s.done
	})
}

// MakeBucket creates a plain (unversioned, unlocked) bucket by making its
// directory, as the posix backend allows. Buckets with object lock are
// created through the S3 API (CreateBucket with object lock enabled).
func (s *Server) MakeBucket(name string) error {
	return os.Mkdir(filepath.Join(s.Dir, name), 0o755)
}

// Objects returns the relative paths of the objects stored in bucket under
// prefix (slash-separated, prefix included), read from the server's
// directory; the server's hidden temporary and metadata directories are
// skipped.
func (s *Server) Objects(bucket, prefix string) ([]string, error) {
	root := filepath.Join(s.Dir, bucket)
	var out []string
	err := filepath.WalkDir(filepath.Join(root, filepath.FromSlash(prefix)), func(p string, d os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() && len(d.Name()) > 0 && d.Name()[0] == '.' {
			return filepath.SkipDir
		}
		if d.Type().IsRegular() {
			rel, err := filepath.Rel(root, p)
			if err != nil {
				return err
			}
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	return out, err
}
