// Replicas for the benchmark: go-ds-crdt v0.6.8 on go-ds-leveldb in a
// directory, either offline (no network, heads broadcast nowhere) or
// networked (libp2p TCP on 127.0.0.1 only, gossipsub broadcaster, bitswap
// DAG syncer), the way go-ds-crdt's own examples wire it.
//
// Invariants: every go-ds-crdt option is its default except
// RebroadcastInterval (1 s, as our benchmarks' replicas use) and the hooks;
// the blockstore lives in the same leveldb as the CRDT state (under
// /blocks), as in the examples; nothing listens or dials beyond loopback.
package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ipfs/boxo/bitswap"
	bsnet "github.com/ipfs/boxo/bitswap/network/bsnet"
	"github.com/ipfs/boxo/blockservice"
	blockstore "github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/boxo/ipld/merkledag"
	ds "github.com/ipfs/go-datastore"
	crdt "github.com/ipfs/go-ds-crdt"
	leveldb "github.com/ipfs/go-ds-leveldb"
	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	yamux "github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	noise "github.com/libp2p/go-libp2p/p2p/security/noise"
	tcp "github.com/libp2p/go-libp2p/p2p/transport/tcp"
)

// rebroadcastInterval is the one go-ds-crdt option changed from its
// default (1 minute): our replicas rebroadcast every second, and a fresh
// replica only learns the heads from a rebroadcast.
const rebroadcastInterval = time.Second

// namespace of the CRDT state inside the datastore (ours uses /crdt too).
var namespace = ds.NewKey("/crdt")

// nodeInit is what a replica is made with.
type nodeInit struct {
	dir     string
	topic   string // empty: offline
	putHook func(k ds.Key, v []byte)
}

type node struct {
	store  *leveldb.Datastore
	host   host.Host
	ps     *pubsub.PubSub
	bswap  *bitswap.Bitswap
	bserv  blockservice.BlockService
	crdt   *crdt.Datastore
	cancel context.CancelFunc
}

// nullBroadcaster sends heads nowhere and never receives any: an offline
// replica, like our benchmarks' store without a broadcaster.
type nullBroadcaster struct{}

func (nullBroadcaster) Broadcast(context.Context, []byte) error { return nil }

func (nullBroadcaster) Next(ctx context.Context) ([]byte, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func openNode(init nodeInit) (_ *node, err error) {
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{cancel: cancel}
	defer func() {
		if err != nil {
			_ = n.close()
		}
	}()

	// go-ds-leveldb defaults: goleveldb options nil, every write and batch
	// synced to disk (syncWrites is always true in v0.5.2).
	n.store, err = leveldb.NewDatastore(init.dir, nil)
	if err != nil {
		return nil, fmt.Errorf("opening leveldb: %w", err)
	}
	bstore := blockstore.NewBlockstore(n.store)

	var bcast crdt.Broadcaster = nullBroadcaster{}
	if init.topic == "" {
		n.bserv = blockservice.New(bstore, nil)
	} else {
		n.host, err = libp2p.New(
			libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
			libp2p.Transport(tcp.NewTCPTransport),
			libp2p.Security(noise.ID, noise.New),
			libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
			libp2p.DisableRelay(),
			libp2p.ForceReachabilityPrivate(),
			libp2p.DisableIdentifyAddressDiscovery(),
			libp2p.DisableMetrics(),
		)
		if err != nil {
			return nil, fmt.Errorf("libp2p host: %w", err)
		}
		n.ps, err = pubsub.NewGossipSub(ctx, n.host)
		if err != nil {
			return nil, fmt.Errorf("gossipsub: %w", err)
		}
		// no content routing: wants go to the connected peers
		n.bswap = bitswap.New(ctx, bsnet.NewFromIpfsHost(n.host), nil, bstore)
		n.bserv = blockservice.New(bstore, n.bswap)
		bcast, err = crdt.NewPubSubBroadcaster(ctx, n.ps, init.topic)
		if err != nil {
			return nil, fmt.Errorf("pubsub broadcaster: %w", err)
		}
	}

	opts := crdt.DefaultOptions()
	opts.RebroadcastInterval = rebroadcastInterval
	opts.PutHook = init.putHook
	n.crdt, err = crdt.New(n.store, namespace, merkledag.NewDAGService(n.bserv), bcast, opts)
	if err != nil {
		return nil, fmt.Errorf("go-ds-crdt: %w", err)
	}
	return n, nil
}

// addr is the node's TCP address with its /p2p/ suffix.
func (n *node) addr() (string, error) {
	addrs, err := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: n.host.ID(), Addrs: n.host.Addrs()})
	if err != nil || len(addrs) == 0 {
		return "", fmt.Errorf("no listen address: %v", err)
	}
	return addrs[0].String(), nil
}

func (n *node) dial(ctx context.Context, addr string) error {
	info, err := peer.AddrInfoFromString(addr)
	if err != nil {
		return err
	}
	return n.host.Connect(ctx, *info)
}

// topicPeers counts the peers gossipsub knows are subscribed to topic.
func (n *node) topicPeers(topic string) int {
	return len(n.ps.ListPeers(topic))
}

// close shuts down in dependency order: the CRDT (which stops the
// broadcaster's reader), bitswap, pubsub and host, then the datastore.
func (n *node) close() error {
	var errs []error
	if n.crdt != nil {
		errs = append(errs, n.crdt.Close())
	}
	n.cancel()
	if n.bswap != nil {
		errs = append(errs, n.bswap.Close())
	}
	if n.host != nil {
		errs = append(errs, n.host.Close())
	}
	if n.store != nil {
		errs = append(errs, n.store.Close())
	}
	return errors.Join(errs...)
}
