// Package erasure splits a pack (a byte blob of tens of MiB) into K data and
// M parity shards with Reed-Solomon coding, and turns any K intact shards back
// into the pack. Each shard is stored as a separate repository object that
// carries its own header, so every shard can be verified on its own, by
// anyone, without the repository key.
//
// # Shard object format (versions 1 and 2)
//
// All integers are little-endian.
//
//	offset          size          field
//	0               4             magic "DRPS"
//	4               1             format version, 1 or 2
//	5               1             K  (1..128)
//	6               1             M  (0..127), K+M <= 255
//	7               1             reserved, must be 0
//	8               8             pack length L (u64), 1 <= L
//	16              4             shard size S (u32) = ceil(L/K)
//	20              32*(K+M)      payload hash of each shard (below)
//	T = 20+32*(K+M)               end of the "shard table"
//	T               1             this shard's index i (0..K+M-1)
//	T+1             3             reserved, must be 0
//	T+4             S             payload
//
// Shards 0..K-1 are data shards: data shard i holds pack bytes
// [i*S, (i+1)*S), zero-padded at the end to S bytes. Shards K..K+M-1 are
// parity shards computed by reedsolomon.New(K, M) over the K data payloads.
//
// The payload hash is SHA-256 in version 1 and BLAKE3-256 (unkeyed) in
// version 2 (see [PayloadHash]); Encode writes version 2, EncodeVersion
// either.
//
// The bytes [0:T) (the shard table) are identical in every shard of a pack.
// The pack ID is their SHA-256 digest, so it commits to the coding
// parameters, the pack length and every shard's payload. A shard is valid
// for pack P at index i when SHA-256(table) == P, the header index is i, the
// reserved bytes are zero, the object is exactly T+4+S bytes long and
// the payload hash equals table hash i (see [VerifyShard]).
//
// Shard objects are named "<pack ID hex>-<i>" with i in decimal, e.g.
// "ab12…ef-3" (see [ShardName]).
package erasure
