// Package dht is the rendezvous layer of rendezvous: a Kademlia DHT (kad-dht
// under its own protocol prefix /p2pos, so it never joins the IPFS network)
// that stores signed address records and topic advertisements.
//
// # Records
//
// Every peer publishes a signed address record (see Record) under the key
// /p2pos/<peer-id>: where it can be reached directly, through which relays, and
// what is known of its NAT. Records are libp2p envelopes signed by the peer's
// own key; any node can verify a fetched record, and a third party can store
// one unchanged. The Validator rejects, each with its own error, malformed
// bytes, bad signatures, records signed by another key, expired records or
// records issued too far in the future, records over MaxRecordSize or
// MaxRecordAddrs, addresses outside the network's scope, and (when replacing a
// held record) a sequence number that is not higher.
//
// # Lookups and publishing
//
// Publicly reachable nodes run the DHT in server mode and hold records; NATed
// nodes run it in client mode. A lookup walks the DHT toward the record's key,
// a few peers at a time, and ends at the first valid record: it does not
// collect a quorum. Publishing stores the record at the Replication closest
// servers; a republish goes straight to the servers that hold the record when
// one of them confirms they are still the closest, and runs a fresh lookup
// otherwise. The Publisher republishes on demand (address or relay changes,
// debounced) and before the record expires.
//
// # Topics
//
// Advertise and FindPeers implement topic rendezvous on DHT provider records
// keyed by a hash of the namespaced topic; every peer found is returned with its
// verified address record.
//
// This package knows nothing of relays or NAT traversal: relay addresses and
// NAT information are data it signs and serves.
package dht
