// Package transport owns drpipe's site-to-site replication: the versioned
// wire protocol between a primary and its DR site, the TLS identities that
// authenticate both ends (a site CA, the site's server certificate and one
// client certificate per primary), the DR-site receiver (Server), the
// sending side (Replicate) and the read-only reading side (SiteBackend).
//
// # Layers
//
// The protocol speaks over Conn and Stream, small interfaces that carry
// ordered byte streams (io.Reader/io.Writer) between two authenticated
// peers. quic.go adapts github.com/quic-go/quic-go to them (ALPN
// "drpipe-site/2", mutual TLS 1.3); the tests run two peers over in-memory
// pipes. Nothing else in the package imports quic-go.
//
// # Wire protocol, version 2
//
// Every message is a frame: a 6-byte header (protocol version, frame type,
// big-endian payload length) and a payload of at most MaxFramePayload
// bytes (see frame.go). A connection has one control stream, opened first
// by the client, and any number of object streams, each carrying exactly
// one object:
//
//	control:  C Hello(purpose, repository[, session]) → S Welcome(…, session)
//	          C Offer(type, names+sizes) → S Want(bitmap)      (batches)
//	          C Seal(type) → S Sealed                          (type complete)
//	          C StatusRequest → S StatusReply (JSON)
//	          C Bye
//	object:   C Put(type, name, size[, snapshot meta]) + size raw bytes, FIN
//	          → S PutResult, FIN
//	read:     C List(type), FIN → S ListPage(entries, more)… ListPage(done), FIN
//	          C Get(type, name, offset, length[, head]), FIN
//	          → S GetReply(size, mtime, length) + length raw bytes, FIN
//
// (read streams exist only in read sessions, see below).
// Errors travel as an Error frame (code and message) before the sender
// closes the stream or connection. Requests on the control stream may be
// pipelined: the site answers them in order.
//
// # Sessions over several connections
//
// A replicate session is started by one connection (Hello purpose
// replicate); the site answers with a random session id. Further
// connections of the same primary (same certificate name, same repository)
// join it with Hello purpose join and that id, and then carry object
// streams only; offers and seals stay on the first connection's control
// stream, and objects on any joined connection count for the session. The
// session, and with it every joined connection, ends with the connection
// that started it. Each connection has its own congestion controller, so
// on a lossy long link, where loss caps a single loss-based connection
// far below the link's capacity, N connections carry about N times as
// much. Version 1 (one connection per session, no session id) is retired.
//
// The client keeps round trips few: it dials the extra connections while
// the first opens the session, sends all offers of a window before
// reading the first answer, writes objects back to back on each connection (awaiting each
// object's PutResult while the next is sent, so connections never idle
// for a round trip), largest first so connections finish a phase
// together, and waits for a seal only where the site needs it (data sealed
// before index objects, index sealed before snapshots); the other seals
// travel with the next. Data is listed, offered and sent a window at a
// time (ReplicateOptions.Window, 65,536 objects), so that neither side
// holds the names of every pack of a large repository: a site refuses
// offers that would leave it holding more than ServerOptions.MaxOutstanding
// wanted names (2^20 by default).
//
// # Read sessions (an optional capability of version 2)
//
// Hello purpose read (4) opens a read-only session: a primary restoring
// from tiers, or planning a site tier, lists and fetches what the site
// holds. It is authenticated exactly like replication (the same mutual
// TLS, client CA and allow-list: the handshake happens before any frame)
// and, when the client names a repository, refused with repository
// mismatch if the site holds another. Every request is a stream of its
// own whose first frame is List or Get; the site answers on it and ends
// it, so requests run concurrently and a failed one does not end the
// session. List streams names and sizes in pages of at most MaxListPage
// entries (memory stays bounded at both ends); Get streams an object or a
// byte range of it after a GetReply giving the object's size and the
// range's length (with head set: the size only, i.e. Stat). A missing
// object is refused with code not found, a range beyond the end with
// code short read. Nothing is ever written or removed in a read session.
// Names pass CheckName (path tricks are refused with bad object name) and
// only replicated classes are served, through the site's store rooted at
// its repository directory (os.Root), so only complete objects committed
// by a verified Put are listed or read: never the temporary files of
// objects being received, never .drpipe-site/ or anything outside the
// directory.
//
// Compatibility: the read capability adds frame types 0x0d–0x10 and codes
// 12–13 to version 2 without a version bump, because it is negotiated at
// session start. A site that predates it refuses the unknown Hello
// purpose before any new frame is sent; the client reports that as
// ErrSiteReadUnsupported ("upgrade drpipe at the site"). Replication and
// status sessions are unchanged, so older primaries keep working with a
// newer site. Only new frame types and purposes are added this way;
// any change to an existing frame bumps ProtocolVersion and the ALPN.
//
// # Ordering and the "complete snapshot" guarantee
//
// The site keeps per-session state: every object it answered "want" for is
// outstanding until a verified Put of it commits. Object classes are
// sealed in the order config, keys, data, index, snapshots: a Seal succeeds
// only when nothing of that class is outstanding and every earlier class
// is sealed. The site accepts an index object only after data is sealed
// and a snapshot object only after index is sealed. The client lists its
// repository in the reverse order (snapshots, then index, then data) so
// that every snapshot it offers references only data it also offers.
// Hence a snapshot becomes visible at the site only when every object its
// repository held before it is present at the site: a cut at any instant,
// of any of the session's connections, leaves at worst unreferenced data,
// never a snapshot (or an index) that points at missing objects. A later
// run offers everything again; objects already committed are answered
// "have" and not resent.
//
// # Verification
//
// The site needs no repository key. Before committing, it checks every
// object against its name: shards with the erasure shard header (the table
// hashes to the pack ID in the name, the index matches, the payload hashes
// to the table entry), index, snapshot and key objects by SHA-256 of their
// bytes, and the config object by parsing its public part. Names must pass
// tiers.Handle.Validate and be canonical for their type, so nothing is
// written outside the site's repository directory.
//
// # Site metadata
//
// The site cannot decrypt snapshots, so the client sends the snapshot's
// host and time alongside it. The site records them, marked as asserted by
// the client, in <repo>/.drpipe-site/ (ignored by the repository layer) and
// reports them in status and metrics.
package transport
