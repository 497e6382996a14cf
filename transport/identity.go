package transport

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/drpipe/drpipe/tiers"
)

// TLS directory layout (everything PEM; keys are PKCS#8, mode 0600):
//
//	TLSDIR/ca.crt                the site CA certificate (both sides need it)
//	TLSDIR/ca.key                the CA key (only where certificates are issued)
//	TLSDIR/site.crt, site.key    the DR site's server certificate
//	TLSDIR/clients/NAME/         one bundle per primary, to copy to that host:
//	    ca.crt, client.crt, client.key
//
// A primary's --tls-dir is either such a bundle or the site's TLSDIR (then
// the bundle under clients/ is chosen by name, or the only one there).
const (
	caCertFile     = "ca.crt"
	caKeyFile      = "ca.key"
	siteCertFile   = "site.crt"
	siteKeyFile    = "site.key"
	clientCertFile = "client.crt"
	clientKeyFile  = "client.key"
	clientsDir     = "clients"
)

// SiteServerName is a DNS name every site certificate carries. Primaries
// verify the site's certificate against the site CA and this name, so the
// address they dial (an IP, a NAT name) need not appear in the
// certificate; a client certificate cannot pass because it lacks the
// server-auth usage.
const SiteServerName = "drpipe-site"

// IssueOptions shape a certificate; zero values pick defaults.
type IssueOptions struct {
	// NotBefore and NotAfter bound validity (default: now-1h .. now+Days).
	NotBefore, NotAfter time.Time
	// Days of validity when NotAfter is zero (default 825).
	Days int
	// Hosts are extra DNS names or IP addresses for a site certificate.
	Hosts []string
}

func (o IssueOptions) window(now time.Time) (time.Time, time.Time) {
	nb, na := o.NotBefore, o.NotAfter
	if nb.IsZero() {
		nb = now.Add(-time.Hour)
	}
	if na.IsZero() {
		d := o.Days
		if d <= 0 {
			d = 825
		}
		na = now.Add(time.Duration(d) * 24 * time.Hour)
	}
	return nb, na
}

// InitResult lists the files InitTLS wrote.
type InitResult struct {
	Dir          string   `json:"dir"`
	CA           string   `json:"ca"`
	SiteCert     string   `json:"site_cert"`
	ClientBundle string   `json:"client_bundle,omitempty"`
	Files        []string `json:"files"`
}

// InitTLS creates a site CA in dir, a site certificate named siteName
// and, if primary is not empty, a client bundle for that primary. It
// refuses to touch a directory that already holds a CA.
func InitTLS(dir, siteName, primary string, o IssueOptions) (*InitResult, error) {
	if siteName == "" {
		siteName = SiteServerName
	}
	if err := tiers.ValidName(siteName); err != nil {
		return nil, fmt.Errorf("site name: %w", err)
	}
	if _, err := os.Stat(filepath.Join(dir, caKeyFile)); err == nil {
		return nil, fmt.Errorf("init site TLS in %s: a CA already exists there (%s); issue more primaries with 'drpipe site issue' or choose another directory", dir, caKeyFile)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("init site TLS: %w", err)
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "drpipe site CA " + siteName, Organization: []string{"drpipe"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("create site CA: %w", err)
	}
	res := &InitResult{Dir: dir, CA: filepath.Join(dir, caCertFile)}
	if err := writePEM(filepath.Join(dir, caKeyFile), "PRIVATE KEY", mustPKCS8(caKey), 0o600); err != nil {
		return nil, err
	}
	if err := writePEM(filepath.Join(dir, caCertFile), "CERTIFICATE", caDER, 0o644); err != nil {
		return nil, err
	}
	res.Files = append(res.Files, filepath.Join(dir, caCertFile), filepath.Join(dir, caKeyFile))
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	// The site certificate.
	hosts := append([]string{SiteServerName, siteName, "localhost", "127.0.0.1", "::1"}, o.Hosts...)
	if hn, err := os.Hostname(); err == nil && hn != "" {
		hosts = append(hosts, hn)
	}
	certDER, key, err := issue(ca, caKey, siteName, hosts, x509.ExtKeyUsageServerAuth, o, now)
	if err != nil {
		return nil, err
	}
	if err := writePEM(filepath.Join(dir, siteKeyFile), "PRIVATE KEY", mustPKCS8(key), 0o600); err != nil {
		return nil, err
	}
	if err := writePEM(filepath.Join(dir, siteCertFile), "CERTIFICATE", certDER, 0o644); err != nil {
		return nil, err
	}
	res.SiteCert = filepath.Join(dir, siteCertFile)
	res.Files = append(res.Files, res.SiteCert, filepath.Join(dir, siteKeyFile))
	if primary != "" {
		b, err := IssueClient(dir, primary, o)
		if err != nil {
			return nil, err
		}
		res.ClientBundle = b
		res.Files = append(res.Files, filepath.Join(b, caCertFile), filepath.Join(b, clientCertFile), filepath.Join(b, clientKeyFile))
	}
	return res, nil
}

// IssueClient issues a client certificate for the primary name with the CA
// in dir and writes the bundle dir/clients/NAME/ (ca.crt, client.crt,
// client.key). It returns the bundle directory. An existing bundle of the
// same name is refused.
func IssueClient(dir, name string, o IssueOptions) (string, error) {
	if err := tiers.ValidName(name); err != nil {
		return "", fmt.Errorf("primary name: %w", err)
	}
	ca, caKey, err := loadCA(dir)
	if err != nil {
		return "", err
	}
	bundle := filepath.Join(dir, clientsDir, name)
	if _, err := os.Stat(filepath.Join(bundle, clientCertFile)); err == nil {
		return "", fmt.Errorf("issue certificate for %s: %s already exists; remove it first to re-issue", name, bundle)
	}
	if err := os.MkdirAll(bundle, 0o700); err != nil {
		return "", fmt.Errorf("issue certificate for %s: %w", name, err)
	}
	certDER, key, err := issue(ca, caKey, name, nil, x509.ExtKeyUsageClientAuth, o, time.Now())
	if err != nil {
		return "", err
	}
	if err := writePEM(filepath.Join(bundle, clientKeyFile), "PRIVATE KEY", mustPKCS8(key), 0o600); err != nil {
		return "", err
	}
	if err := writePEM(filepath.Join(bundle, clientCertFile), "CERTIFICATE", certDER, 0o644); err != nil {
		return "", err
	}
	if err := writePEM(filepath.Join(bundle, caCertFile), "CERTIFICATE", ca.Raw, 0o644); err != nil {
		return "", err
	}
	return bundle, nil
}

func issue(ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn string, hosts []string, usage x509.ExtKeyUsage, o IssueOptions, now time.Time) ([]byte, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	nb, na := o.window(now)
	t := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"drpipe"}},
		NotBefore:    nb,
		NotAfter:     na,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	seen := map[string]bool{}
	for _, h := range hosts {
		if h == "" || seen[h] {
			continue
		}
		seen[h] = true
		if ip := net.ParseIP(h); ip != nil {
			t.IPAddresses = append(t.IPAddresses, ip)
		} else {
			t.DNSNames = append(t.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, t, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("issue certificate for %s: %w", cn, err)
	}
	return der, key, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return n
}

func mustPKCS8(k *ecdsa.PrivateKey) []byte {
	b, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		panic(err) // P-256 keys always marshal
	}
	return b
}

// writePEM writes one PEM block durably (temp, fsync, rename).
func writePEM(path, typ string, der []byte, mode fs.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := pem.Encode(f, &pem.Block{Type: typ, Bytes: der}); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func readPEM(path, typ string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	b, _ := pem.Decode(raw)
	if b == nil || b.Type != typ {
		return nil, fmt.Errorf("%s: no PEM %s block", path, typ)
	}
	return b.Bytes, nil
}

func loadCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	der, err := readPEM(filepath.Join(dir, caCertFile), "CERTIFICATE")
	if err != nil {
		return nil, nil, fmt.Errorf("load site CA from %s: %w (create one with 'drpipe site init --dir %s')", dir, err, dir)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("load site CA %s: %w", filepath.Join(dir, caCertFile), err)
	}
	kder, err := readPEM(filepath.Join(dir, caKeyFile), "PRIVATE KEY")
	if err != nil {
		return nil, nil, fmt.Errorf("load site CA key from %s: %w (issue certificates where the CA key is kept)", dir, err)
	}
	k, err := x509.ParsePKCS8PrivateKey(kder)
	if err != nil {
		return nil, nil, fmt.Errorf("load site CA key %s: %w", filepath.Join(dir, caKeyFile), err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, nil, fmt.Errorf("load site CA key %s: not an ECDSA key", filepath.Join(dir, caKeyFile))
	}
	return ca, ek, nil
}

func loadPool(path string) (*x509.CertPool, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(raw) {
		return nil, fmt.Errorf("load CA certificate %s: no certificate in it", path)
	}
	return pool, nil
}

// ServerTLSOptions shape the site's TLS configuration.
type ServerTLSOptions struct {
	// Allow, when not empty, is the list of primary names (certificate
	// common names) that may connect; others are refused in the
	// handshake even with a valid certificate.
	Allow []string
	// OnRefuse, if set, is called with the reason whenever a client
	// certificate is refused (for logs and metrics).
	OnRefuse func(reason string)
	// Now is the clock for certificate validity (default time.Now).
	Now func() time.Time
}

// ServerTLS loads the site's certificate and CA from dir and returns a
// TLS 1.3 configuration that requires a client certificate chaining to
// that CA, valid now, with the client-auth usage, and (with Allow) a
// listed name. Refused handshakes never reach the protocol.
func ServerTLS(dir string, o ServerTLSOptions) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, siteCertFile), filepath.Join(dir, siteKeyFile))
	if err != nil {
		return nil, fmt.Errorf("load site certificate from %s: %w (create it with 'drpipe site init --dir %s')", dir, err, dir)
	}
	pool, err := loadPool(filepath.Join(dir, caCertFile))
	if err != nil {
		return nil, err
	}
	now := o.Now
	if now == nil {
		now = time.Now
	}
	allow := map[string]bool{}
	for _, a := range o.Allow {
		allow[a] = true
	}
	refuse := func(format string, args ...any) error {
		err := fmt.Errorf(format, args...)
		if o.OnRefuse != nil {
			o.OnRefuse(err.Error())
		}
		return err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		// Verified below, so that every refusal is reported with its
		// reason; a client without a certificate fails here already.
		ClientAuth: tls.RequireAnyClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return refuse("client sent no certificate")
			}
			certs := make([]*x509.Certificate, 0, len(raw))
			for _, r := range raw {
				c, err := x509.ParseCertificate(r)
				if err != nil {
					return refuse("client certificate does not parse: %v", err)
				}
				certs = append(certs, c)
			}
			inter := x509.NewCertPool()
			for _, c := range certs[1:] {
				inter.AddCert(c)
			}
			leaf := certs[0]
			_, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: now(),
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
			if err != nil {
				return refuse("client certificate %q refused: %v", leaf.Subject.CommonName, err)
			}
			if tiers.ValidName(leaf.Subject.CommonName) != nil {
				return refuse("client certificate common name %q is not a valid primary name", leaf.Subject.CommonName)
			}
			if len(allow) > 0 && !allow[leaf.Subject.CommonName] {
				return refuse("client %q is not in the site's allow-list", leaf.Subject.CommonName)
			}
			return nil
		},
	}, nil
}

// ClientTLS loads a primary's certificate from dir (a client bundle, or a
// site TLS directory holding clients/NAME) and returns a TLS 1.3
// configuration that presents it and accepts only a site certificate
// issued by the same CA. name picks the bundle under clients/ when there
// are several.
func ClientTLS(dir, name string) (*tls.Config, string, error) {
	bundle, err := findBundle(dir, name)
	if err != nil {
		return nil, "", err
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(bundle, clientCertFile), filepath.Join(bundle, clientKeyFile))
	if err != nil {
		return nil, "", fmt.Errorf("load primary certificate from %s: %w", bundle, err)
	}
	pool, err := loadPool(filepath.Join(bundle, caCertFile))
	if err != nil {
		return nil, "", err
	}
	cn := ""
	if x, err := x509.ParseCertificate(cert.Certificate[0]); err == nil {
		cn = x.Subject.CommonName
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ServerName:   SiteServerName,
	}, cn, nil
}

func findBundle(dir, name string) (string, error) {
	if name == "" {
		if _, err := os.Stat(filepath.Join(dir, clientCertFile)); err == nil {
			return dir, nil
		}
	}
	cd := filepath.Join(dir, clientsDir)
	if name != "" {
		if err := tiers.ValidName(name); err != nil {
			return "", fmt.Errorf("primary name: %w", err)
		}
		// dir may itself be that primary's bundle (copied to the host).
		if der, err := readPEM(filepath.Join(dir, clientCertFile), "CERTIFICATE"); err == nil {
			c, err := x509.ParseCertificate(der)
			if err == nil && c.Subject.CommonName == name {
				return dir, nil
			}
			if err == nil {
				return "", fmt.Errorf("%s is the certificate bundle of primary %q, not of %q: use that primary's bundle, or drop --tls-name", dir, c.Subject.CommonName, name)
			}
		}
		b := filepath.Join(cd, name)
		if _, err := os.Stat(filepath.Join(b, clientCertFile)); err != nil {
			return "", fmt.Errorf("no certificate for primary %q in %s: issue one with 'drpipe site issue --dir %s --name %s'", name, dir, dir, name)
		}
		return b, nil
	}
	ents, err := os.ReadDir(cd)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("no primary certificate in %s: expected client.crt/client.key (a bundle from 'drpipe site init' or 'drpipe site issue')", dir)
		}
		return "", fmt.Errorf("find primary certificate in %s: %w", dir, err)
	}
	var names []string
	for _, e := range ents {
		if e.IsDir() {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	switch len(names) {
	case 0:
		return "", fmt.Errorf("no primary certificate in %s: issue one with 'drpipe site issue --dir %s --name NAME'", dir, dir)
	case 1:
		return filepath.Join(cd, names[0]), nil
	}
	return "", fmt.Errorf("%s holds certificates for several primaries (%s): choose one with --tls-name", dir, strings.Join(names, ", "))
}
