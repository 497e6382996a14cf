package repo

// ParseConfig decodes the public part of a config object's stored bytes
// and checks its format name, version, erasure parameters and pack size,
// without a key. It is what a holder of ciphertext only (the DR site, a
// tape reader) uses to accept a config object; the sealed part can only
// be checked by Open.
func ParseConfig(raw []byte) (*Config, error) { return parseConfigPublic(raw) }
