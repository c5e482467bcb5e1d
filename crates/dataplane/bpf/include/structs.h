/* Structs shared with the Rust side: src/abi.rs, held to this layout by a test that reads
 * the BTF of the compiled program (src/btf.rs). */
#ifndef FULCRUM_STRUCTS_H
#define FULCRUM_STRUCTS_H

#include <linux/types.h>

/* A virtual service: (protocol, VIP, port). IPv4 addresses use the first 4 bytes. */
struct service_key {
	__u8 addr[16];
	__be16 port;
	__u8 proto;
	__u8 family; /* 4 or 6 */
};
_Static_assert(sizeof(struct service_key) == 20, "service_key layout");

struct service_value {
	__u32 id;              /* 0..MAX_SERVICES */
	__u8 sched;            /* enum sched_kind */
	__u8 flags;            /* SVC_F_* */
	__u16 ndests;          /* real-server slots in use: 0..ndests */
	__u32 persist_timeout; /* seconds; with SVC_F_PERSISTENT */
	__be32 persist_mask;   /* clients are grouped by source & mask; IPv6: the prefix
				* length, a number (1..128) */
	__s32 wrr_mw;          /* wrr: max weight - (gcd - 1) */
	__s32 wrr_di;          /* wrr: gcd of the weights */
	__u32 table_size;      /* dh, sh, mh: slots in the scheduler table */
	__u32 pad;
};
_Static_assert(sizeof(struct service_value) == 32, "service_value layout");

/* A real server slot. Slots are stable for a real server's life, so connections keep
 * their slot; a deleted server leaves a hole (flags without DEST_F_PRESENT). */
struct dest {
	__be32 addr;
	__be16 port;
	__u8 method; /* METHOD_NAT, METHOD_DR, METHOD_TUN */
	__u8 flags;  /* DEST_F_* */
	__u32 weight;
	__u32 ifindex; /* DR: the interface the real server is on */
	__u8 mac[6];   /* DR: its MAC, from the neighbour table (zero: not resolved yet) */
	__u8 smac[6];  /* DR: the MAC of that interface */
	__u32 u_threshold; /* connections at which it is overloaded (0: none) */
	__u32 l_threshold; /* ... and below which it is not any more (0: 3/4 of upper) */
	__be32 tun_saddr;  /* TUN: the outer source, the director's address towards it */
	__be16 tun_port;   /* TUN gue: the UDP port */
	__u8 tun_type;     /* TUN_IPIP, TUN_GUE, TUN_GRE */
	__u8 tun_flags;    /* TUN_F_* */
};
_Static_assert(sizeof(struct dest) == 44, "dest layout");

/* Connections of a real server, changed only by the program, atomically. */
struct dest_conns {
	__u32 active;   /* TCP ESTABLISHED */
	__u32 inactive; /* every other tracked connection */
};

/* Traffic of a service or a real server, per CPU. `in` is client to server. */
struct traffic {
	__u64 conns;
	__u64 inpkts;
	__u64 outpkts;
	__u64 inbytes;
	__u64 outbytes;
};

/* Scheduler state of a service, changed with compare-and-swap. */
struct sched_state {
	__u64 rr;  /* rr: last chosen position in scan order + 1 (0: none yet) */
	__u64 wrr; /* wrr: (last chosen position + 1) << 32 | current weight */
	__u64 rng; /* twos: xorshift64* state */
	__u64 pad;
};

/* A flow as seen on the wire: source, destination, ports (network order), protocol. */
struct flow_key {
	__be32 src;
	__be32 dst;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};
_Static_assert(sizeof(struct flow_key) == 16, "flow_key layout");

/* A tracked connection. The client's entry is keyed by (client, VIP); a NAT flow also
 * has a reply entry keyed by (real server, client) with CONN_F_REPLY and the same data. */
struct conn {
	__u64 expires; /* deadline, clock_now() (CLOCK_MONOTONIC to the tick) */
	__be32 client;
	__be32 vip;
	__be32 rip;
	__be16 cport;
	__be16 vport;
	__be16 rport;
	__u8 proto;
	__u8 state;    /* enum conn_state */
	__u32 svc;     /* service id */
	__u16 dest;    /* slot in the service */
	__u8 method;
	__u8 flags;    /* CONN_F_* */
	__u32 timeout; /* seconds, for the current state */
	/* The next hop, cached from the first FIB lookup while route_gen matches the
	 * control plane's generation (bumped when neighbours or routes change). */
	__u32 ifindex; /* 0: not cached */
	__u8 dmac[6];
	__u8 smac[6];
	__u32 route_gen;
	/* TUN: the route's MTU towards the real server, learnt with the next hop (0: not
	 * known, nothing checked). */
	__u16 mtu;
	/* Packets from the client, wrapping (IPVS's in_pkts, for the sync master's
	 * sync_threshold); counted without atomics, so a rare one is lost to a race. */
	__u16 in_pkts;
	/* COUNTED_*: which count holds it. 64 bits because BPF's compare-and-swap on 32
	 * bits needs -mcpu=v3, under which the schedulers' loops no longer verify. */
	__u64 counted;
};
_Static_assert(sizeof(struct conn) == 72, "conn layout");

/* A slot of the IPv4 connection table (conntab.h): its tag (SLOT_* state, generation),
 * the flow key as two words (src | dst << 32; the ports' 32-bit word | proto << 32), how
 * far the entries homed at this slot went, and the entry. */
struct conn_slot {
	__u64 tag;
	__u64 w0;
	__u64 w1;
	__u32 reach; /* as a home slot: REACH_* (conntab.h) */
	__u32 pad;
	struct conn c;
};
_Static_assert(sizeof(struct conn_slot) == 104, "conn_slot layout");

/* The IPv4 connection table's parameters: the hash's multipliers (random and odd, set
 * once per table), how many entries the stash holds, how many the table holds, its
 * slots, and the most entries it takes (two per connection of --max-connections; the
 * rest of the slots stay free, so windows stay short). */
struct conn_hash {
	__u64 mul0;
	__u64 mul1;
	__u64 stashed;
	__u64 live;
	__u32 slots;
	__u32 limit;
	__u64 mul2; /* the hash's mixing multiplier (conn_home) */
};
_Static_assert(sizeof(struct conn_hash) == 48, "conn_hash layout");

/* An IPv6 flow as seen on the wire. */
struct flow_key6 {
	__u8 src[16];
	__u8 dst[16];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
} __attribute__((aligned(8))); /* its addresses are read as 64-bit words */
_Static_assert(sizeof(struct flow_key6) == 40, "flow_key6 layout");

/* A tracked IPv6 connection: `c` as an IPv4 one (state, counts, timers, next hop; its
 * client, vip and rip hold the addresses folded to 32 bits, as IPVS folds them for its
 * hashes), then the addresses themselves. Keyed as IPv4 entries are: the client's by
 * (client, VIP), a NAT reply entry by (real server, client). */
struct conn6 {
	struct conn c;
	__u8 client[16];
	__u8 vip[16];
	__u8 rip[16];
};
_Static_assert(sizeof(struct conn6) == 120, "conn6 layout");

/* A slot of the IPv6 connection table (conntab.h), as conn_slot: the flow key's addresses
 * as a word hashed with the table's random multipliers (w0) and its ports and protocol as
 * IPv4's (w1); the key itself is the entry's (a client's entry: client, VIP; a reply
 * entry: real server, client), compared in full on every lookup. */
struct conn_slot6 {
	__u64 tag;
	__u64 w0;
	__u64 w1;
	__u32 reach;
	__u32 pad;
	struct conn6 c;
};
_Static_assert(sizeof(struct conn_slot6) == 152, "conn_slot6 layout");

/* The IPv6 table's parameters: conn_hash's, and the random odd multipliers that fold a
 * key's four address words into its w0. */
struct conn_hash6 {
	struct conn_hash h;
	__u64 amul[4];
};
_Static_assert(sizeof(struct conn_hash6) == 80, "conn_hash6 layout");

/* See the clock map: now = jiffies * tick_ns - base. */
struct clock {
	__u64 tick_ns; /* the length of a jiffy (0: not set, use the coarse clock) */
	__u64 base;
};
_Static_assert(sizeof(struct clock) == 16, "clock layout");

/* Persistence template: (service, client & mask) -> real server. */
struct persist_key {
	__u32 svc;
	__be32 client;
};

/* An IPv6 client's network: its address with the bits past the service's prefix length
 * cleared. */
struct persist_key6 {
	__u32 svc;
	__u32 pad;
	__u8 client[16];
};

struct persist_value {
	__u64 expires;
	__u32 dest;
	__be32 rip; /* the server it was made for: a reused slot does not inherit it */
};

/* dh, sh and mh tables: (service, slot) -> real-server slot. */
struct table_key {
	__u32 svc;
	__u32 slot;
};

/* lblc and lblcr: (service, destination address) -> server, or set of servers. */
struct locality_key {
	__u32 svc;
	__be32 addr;
};

struct locality_value {
	__u64 used;      /* last use, ns */
	__u64 changed;   /* lblcr: last change of the set, ns */
	__u64 set[2];    /* lblcr: bitmap of slots (MAX_DESTS = 128) */
	__u32 dest;      /* lblc: the server */
	__u32 pad;
};

#endif
