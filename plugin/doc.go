// Package plugin lets separate programs, plugins, reach plugins on other
// peers through their local node. A running node (rendezvous node
// --plugins FILE) serves a Unix domain socket, plugins.sock in its data
// directory, mode 0600. Each plugin connects with its token from the
// node's configuration (Config), which also says which services it may
// register (take streams for) and open (reach on other peers). Over the
// one socket a plugin registers services, accepts the streams peers open
// to them, opens streams to services on peers, looks peers up and finds
// them by topic. The node carries each stream over its P2P connection to
// the other node, which hands it to the plugin that registered the
// service there.
//
// Server is the node's side; Client is the Go SDK for plugin authors.
// Plugins in other languages speak the wire protocol below.
//
// # Wire protocol
//
// The socket carries frames both ways. A frame is a 9-byte header and a
// payload:
//
//	type     1 byte     the frame type, below
//	id       4 bytes    big-endian: a request's or a stream's ID, 0 for the
//	                    session itself
//	length   4 bytes    big-endian: the payload's length, at most 65536
//	payload  length bytes
//
// The plugin numbers its requests and the streams it opens from one
// counter, from 1 up, never reusing an ID in a session; IDs are below
// 2^31. Streams the node opens (incoming ones) have IDs of 2^31 and up.
//
// A session starts with the plugin's HELLO; the node answers WELCOME, or
// ERROR and closes the socket. Frame types:
//
//	0x01 HELLO       plugin; id 0; payload: version (1 byte, 1), then the
//	                 token (the rest)
//	0x02 WELCOME     node; id 0; payload: the node's peer ID, as text
//	0x03 REGISTER    plugin; request; payload: a service name ("chat/1").
//	                 Answer: RESULT {} or ERROR. From then on the node
//	                 hands the plugin every stream a peer opens to it.
//	0x04 UNREGISTER  plugin; request; payload: a service name. Answer:
//	                 RESULT {} or ERROR.
//	0x05 OPEN        plugin; a new stream's ID; payload: the peer's ID as
//	                 text with a 1-byte length before it, then the service
//	                 name. Answer: OPENED, or ERROR with the stream's ID.
//	0x06 OPENED      node; the stream's ID; payload: JSON
//	                 {"peer":…,"service":…,"relayed":bool}
//	0x07 INCOMING    node; a new stream's ID (2^31 and up); payload: JSON
//	                 as OPENED's: a peer opened the stream to a service
//	                 the plugin registered
//	0x08 DATA        both; a stream's ID; payload: the stream's next bytes
//	0x09 WINDOW      both; a stream's ID; payload: 4 bytes, big-endian: the
//	                 sender grants the other side that many more DATA
//	                 bytes on the stream
//	0x0a CLOSE_WRITE both; a stream's ID; no payload: the sender sends no
//	                 more DATA on the stream (the reader gets end of file)
//	0x0b RESET       both; a stream's ID; payload: an optional message.
//	                 The stream is aborted both ways.
//	0x0c LOOKUP      plugin; request; payload: a peer ID as text. Answer:
//	                 RESULT with a record, or ERROR.
//	0x0d FIND        plugin; request; payload: the most peers wanted (2
//	                 bytes, big-endian), then a topic. Answer: RESULT with
//	                 a JSON array of records, or ERROR.
//	0x0e ADVERTISE   plugin; request; payload: a topic, which the node
//	                 then advertises (FIND on any node finds it). Answer:
//	                 RESULT {} or ERROR.
//	0x0f RESULT      node; the request's ID; payload: JSON
//	0x10 ERROR       node; the request's or stream's ID, or 0 when the
//	                 node ends the session; payload: a code (1 byte), then
//	                 a message in UTF-8
//
// A record, in RESULT, is JSON:
//
//	{"peer_id":"12D3Koo…","seq":7,"expires":"2026-…Z",
//	 "addrs":["/ip4/…"],"relay_addrs":["/ip4/…/p2p/…/p2p-circuit"],
//	 "reachability":"private"}
//
// Error codes: 1 malformed frame (the session ends), 2 wrong token or no
// HELLO first (the session ends), 3 service not granted, 4 service taken
// by another plugin or the node, 5 not found (no record, or the peer does
// not handle the service), 6 the network failed, 7 a request that makes no
// sense (a bad name, an ID in use).
//
// Flow control: each side may send 1048576 DATA bytes on a new stream, and
// then only as many more as the other side granted with WINDOW. A side
// grants what its application read (the Go SDK in batches of half that
// window), so a slow reader slows the writer down, across the nodes to the
// other plugin: the node reads a peer's stream only as fast as the plugin
// grants, and grants only what it could write to the peer. A side that
// sends more than it was granted, DATA after its CLOSE_WRITE, a WINDOW not
// 4 bytes long, or a frame type it may not send, breaks the protocol: the
// node answers ERROR 1 and closes the socket. A stream ends when both sides
// sent CLOSE_WRITE, or either sent RESET. When a plugin's socket closes,
// the node drops its registrations and resets its streams; other plugins
// are not disturbed.
package plugin
