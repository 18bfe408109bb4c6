package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/ipfs/boxo/bitswap"
	bsnet "github.com/ipfs/boxo/bitswap/network/bsnet"
	"github.com/ipfs/boxo/blockservice"
	blockstore "github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/boxo/ipld/merkledag"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	crdt "github.com/ipfs/go-ds-crdt"
	leveldb "github.com/ipfs/go-ds-leveldb"
	logging "github.com/ipfs/go-log/v2"
	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/gologshim"
	yamux "github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	noise "github.com/libp2p/go-libp2p/p2p/security/noise"
	tcp "github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

var logger = logging.Logger("go-crdt-replica")

// setupLogging sends every go-log (and go-libp2p slog) logger to stderr at
// the given level. stdout is reserved for protocol lines.
func setupLogging(level string) error {
	lvl, err := logging.Parse(level)
	if err != nil {
		return fmt.Errorf("bad -loglevel: %w", err)
	}
	cfg := logging.GetConfig()
	cfg.Stderr = true
	cfg.Stdout = false
	cfg.File = ""
	cfg.URL = ""
	cfg.Format = logging.PlaintextOutput
	cfg.Level = lvl
	cfg.SubsystemLevels = nil
	logging.SetupLogging(cfg)
	// go-libp2p logs through slog; route it into go-log so it follows the
	// same level and output.
	gologshim.SetDefaultHandler(logging.SlogHandler())
	return logging.SetLogLevel("*", level)
}

type replica struct {
	cfg config

	store     ds.Batching
	host      host.Host
	pubsub    *pubsub.PubSub
	bstore    blockstore.Blockstore
	bswap     *bitswap.Bitswap
	bserv     blockservice.BlockService
	crdt      *crdt.Datastore
	namespace ds.Key

	bcastCancel context.CancelFunc
	psCancel    context.CancelFunc

	closeOnce sync.Once
	closeErr  error
}

func loadOrCreateKey(path string) (crypto.PrivKey, error) {
	if path == "" {
		priv, _, err := crypto.GenerateEd25519Key(nil)
		return priv, err
	}
	b, err := os.ReadFile(path)
	if err == nil {
		return crypto.UnmarshalPrivateKey(b)
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	priv, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		return nil, err
	}
	b, err = crypto.MarshalPrivateKey(priv)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return nil, err
	}
	return priv, nil
}

func newReplica(ctx context.Context, cfg config) (_ *replica, err error) {
	r := &replica{cfg: cfg, namespace: ds.NewKey(cfg.namespace)}
	defer func() {
		if err != nil {
			_ = r.Close()
		}
	}()

	listen, err := ma.NewMultiaddr(cfg.listen)
	if err != nil {
		return nil, fmt.Errorf("bad -listen: %w", err)
	}
	if err := checkLoopbackTCP(listen); err != nil {
		return nil, err
	}

	priv, err := loadOrCreateKey(cfg.keyFile)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}

	// Datastore: in-memory by default, leveldb when -data is given.
	if cfg.dataDir != "" {
		if err := os.MkdirAll(cfg.dataDir, 0o755); err != nil {
			return nil, err
		}
		lds, err := leveldb.NewDatastore(cfg.dataDir, nil)
		if err != nil {
			return nil, fmt.Errorf("opening leveldb datastore: %w", err)
		}
		r.store = lds
	} else {
		r.store = dssync.MutexWrap(ds.NewMapDatastore())
	}

	// libp2p: loopback TCP only, noise + yamux, nothing that reaches out on
	// its own (no DHT, relay, NAT port mapping, hole punching, AutoNAT
	// probing, QUIC, websockets).
	r.host, err = libp2p.New(
		libp2p.Identity(priv),
		libp2p.ListenAddrs(listen),
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

	// Gossipsub with the default (StrictSign) message signing policy.
	psCtx, psCancel := context.WithCancel(ctx)
	r.psCancel = psCancel
	r.pubsub, err = pubsub.NewGossipSub(psCtx, r.host)
	if err != nil {
		return nil, fmt.Errorf("gossipsub: %w", err)
	}

	// Blocks: bitswap over the host, no content routing (peers are
	// connected directly, so wants are sent to every connected peer).
	r.bstore = blockstore.NewBlockstore(r.store) // keys under /blocks
	r.bswap = bitswap.New(ctx, bsnet.NewFromIpfsHost(r.host), nil, r.bstore)
	r.bserv = blockservice.New(r.bstore, r.bswap)
	dags := merkledag.NewDAGService(r.bserv)

	bcastCtx, bcastCancel := context.WithCancel(ctx)
	r.bcastCancel = bcastCancel
	bcast, err := crdt.NewPubSubBroadcaster(bcastCtx, r.pubsub, cfg.topic)
	if err != nil {
		return nil, fmt.Errorf("pubsub broadcaster: %w", err)
	}

	opts := crdt.DefaultOptions()
	opts.Logger = logging.Logger("crdt")
	opts.RebroadcastInterval = cfg.rebroadcast
	opts.DAGSyncerTimeout = 60 * time.Second
	opts.NumWorkers = 5
	// a child whose fetch failed (e.g. timed out on a loaded machine) is
	// only fetched again by a repair, which defaults to once an hour
	opts.RepairInterval = 5 * time.Second

	r.crdt, err = crdt.New(r.store, r.namespace, dags, bcast, opts)
	if err != nil {
		return nil, fmt.Errorf("crdt datastore: %w", err)
	}
	return r, nil
}

func checkLoopbackTCP(a ma.Multiaddr) error {
	if _, err := a.ValueForProtocol(ma.P_TCP); err != nil {
		return fmt.Errorf("-listen must be a TCP multiaddr: %s", a)
	}
	ip, err := manet.ToIP(a)
	if err != nil || !ip.IsLoopback() {
		return fmt.Errorf("-listen must be a loopback address (127.0.0.1): %s", a)
	}
	return nil
}

// p2pAddrs returns the listen addresses with the /p2p/<id> suffix.
func (r *replica) p2pAddrs() []string {
	addrs, err := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: r.host.ID(), Addrs: r.host.Addrs()})
	out := make([]string, 0, len(addrs))
	if err != nil {
		return out
	}
	for _, a := range addrs {
		out = append(out, a.String())
	}
	return out
}

// Close shuts everything down in dependency order: broadcaster first (as
// go-ds-crdt asks), then the crdt datastore, bitswap, pubsub, the host and
// finally the underlying datastore.
func (r *replica) Close() error {
	r.closeOnce.Do(func() {
		var errs []error
		if r.bcastCancel != nil {
			r.bcastCancel()
		}
		if r.crdt != nil {
			errs = append(errs, r.crdt.Close())
		}
		if r.bserv != nil {
			errs = append(errs, r.bserv.Close())
		} else if r.bswap != nil {
			errs = append(errs, r.bswap.Close())
		}
		if r.psCancel != nil {
			r.psCancel()
		}
		if r.host != nil {
			errs = append(errs, r.host.Close())
		}
		if r.store != nil {
			errs = append(errs, r.store.Close())
		}
		r.closeErr = errors.Join(errs...)
	})
	return r.closeErr
}
