/* Constants shared by the XDP program's headers. Mirrored in src/abi.rs; the Rust side
 * asserts the sizes and offsets of every shared struct against these. */
#ifndef FULCRUM_CONSTANTS_H
#define FULCRUM_CONSTANTS_H

#define ETH_P_IP_BE 0x0008   /* htons(ETH_P_IP) */
#define ETH_P_IPV6_BE 0xDD86 /* htons(ETH_P_IPV6) */
#define IP_MF 0x2000
#define IP_DF 0x4000
#define IP_OFFSET 0x1FFF
#define AF_INET 2
#define AF_INET6 10
#define NSEC_PER_SEC 1000000000ULL

/* Virtual services: key -> id in 0..MAX_SERVICES. Real servers of a service live in slots
 * id * MAX_DESTS + 0..MAX_DESTS of the per-destination arrays. */
#define MAX_SERVICES 1024
#define MAX_DESTS 128
/* IPv6 connection entries (a NAT connection takes two: client's and reply), and the
 * persistence tables' base. The control plane may set other sizes at load time. */
#define MAX_CONNS 2097152
/* IPv4 connection table slots for 1,048,576 connections (the control plane's rule: two
 * entries each, a fifth left free). */
#define CONN_SLOTS 2621440
/* Scheduler tables (dh, sh: 256 buckets; mh: a prime, 65537), keyed by (service, slot). */
#define MAX_TABLE_ENTRIES 4194304
#define MAX_LOCALITY 65536
#define MAX_NO_ACCEPT 4096
#define IPPROTO_VRRP 112

/* enum sched_kind: the fourteen IPVS schedulers. */
enum sched_kind {
	SCHED_RR = 0,
	SCHED_WRR = 1,
	SCHED_LC = 2,
	SCHED_WLC = 3,
	SCHED_LBLC = 4,
	SCHED_LBLCR = 5,
	SCHED_DH = 6,
	SCHED_SH = 7,
	SCHED_SED = 8,
	SCHED_NQ = 9,
	SCHED_FO = 10,
	SCHED_OVF = 11,
	SCHED_MH = 12,
	SCHED_TWOS = 13,
};

/* service_value.flags */
#define SVC_F_PERSISTENT 0x01
#define SVC_F_OPS 0x02
#define SVC_F_SH_PORT 0x04
#define SVC_F_SH_FALLBACK 0x08
#define SVC_F_MH_PORT 0x10
#define SVC_F_MH_FALLBACK 0x20
/* IPVS's sloppy_tcp, per service: any TCP packet but a RST may start a connection, so a
 * flow that ECMP moves to this director mid-way is scheduled (by mh, to the same real
 * server the other directors chose) instead of handed to the kernel. */
#define SVC_F_SLOPPY_TCP 0x40

/* dest.method */
#define METHOD_NAT 0
#define METHOD_DR 1
#define METHOD_TUN 2

/* dest.tun_type: IPVS's tunnel types (IP_VS_CONN_F_TUNNEL_TYPE_*). */
#define TUN_IPIP 0
#define TUN_GUE 1
#define TUN_GRE 2
/* dest.tun_flags: IPVS's IP_VS_TUNNEL_ENCAP_FLAG_*. */
#define TUN_F_CSUM 0x01
#define TUN_F_REMCSUM 0x02

/* dest.flags */
#define DEST_F_PRESENT 0x01    /* the slot holds a real server */
#define DEST_F_OVERLOADED 0x02 /* upper threshold reached */
#define DEST_F_V6 0x04         /* an IPv4 service's IPv6 real server (TUN): address in dests6 */

/* conn.flags */
#define CONN_F_REPLY 0x01    /* the reverse (real server -> client) entry of a NAT flow */
#define CONN_F_NOOUTPUT 0x04 /* DR: the director sees only the client's half */

/* errno's EEXIST, as bpf_map_update_elem returns it negated. */
#define E_EXIST 17
/* errno's E2BIG, as a full map refuses an entry. */
#define E_2BIG 7
/* How many slots from its hash an IPv4 connection entry may sit (conntab.h). */
#define CONN_WINDOW 16
/* Locks for putting IPv4 connection entries, by their home slot (conntab.h). */
#define CONN_LOCKS 65536
/* Slots per live count the control plane reads to skip empty stretches. */
#define CONN_CHUNK 1024

/* conn.counted: which of its destination's counts holds a connection. Changed only by
 * compare-and-swap: the client's and the server's packets of one connection can be
 * handled at the same time on two CPUs, and exactly one of them may move the count. */
#define COUNTED_NONE 0     /* not counted (a NAT reply entry) */
#define COUNTED_INACTIVE 1 /* in the destination's inactive connections */
#define COUNTED_ACTIVE 2   /* in its active connections (TCP ESTABLISHED) */
#define COUNTED_GONE 3     /* released: its count was given back */

/* IPVS's TCP states (ip_vs.h), as ipvsadm -Lnc names them. UDP connections use
 * STATE_UDP for their timeout. */
enum conn_state {
	TCP_S_NONE = 0,
	TCP_S_ESTABLISHED = 1,
	TCP_S_SYN_SENT = 2,
	TCP_S_SYN_RECV = 3,
	TCP_S_FIN_WAIT = 4,
	TCP_S_TIME_WAIT = 5,
	TCP_S_CLOSE = 6,
	TCP_S_CLOSE_WAIT = 7,
	TCP_S_LAST_ACK = 8,
	TCP_S_LISTEN = 9,
	TCP_S_SYNACK = 10,
	STATE_UDP = 11,
	STATE_MAX = 12,
};

/* Indexes of the per-CPU counters in the `stats` map: why a packet got its verdict.
 * Mirrored by `Reason` in src/lib.rs. */
enum stat_reason {
	STAT_NOT_IP = 0,      /* not IPv4 or IPv6: ARP and friends, to the kernel */
	STAT_MALFORMED = 1,   /* truncated headers: to the kernel, which drops them */
	STAT_FRAGMENT = 2,    /* IPv4 fragments: to the kernel */
	STAT_IP_OPTIONS = 3,  /* IPv4 with options: to the kernel */
	STAT_IPV6 = 4,        /* IPv6 for this host: to xdp_fulcrum6 */
	STAT_NO_SERVICE = 5,  /* IPv4 TCP/UDP to no virtual service: to the kernel */
	STAT_SERVICE = 6,     /* a new flow to a virtual service */
	STAT_OTHER_L4 = 7,    /* IPv4 neither TCP nor UDP: to the kernel */
	STAT_NAT_IN = 8,      /* client -> real server, rewritten and sent */
	STAT_NAT_OUT = 9,     /* real server -> client, rewritten back and sent */
	STAT_DR = 10,         /* client -> real server by MAC, sent */
	STAT_NOT_SYN = 11,    /* TCP to a service, no connection, not a SYN: to the kernel */
	STAT_NO_DEST = 12,    /* no usable real server: to the kernel (which refuses it) */
	STAT_FIB_PASS = 13,   /* rewritten, but the route or neighbour needs the kernel */
	STAT_NO_NEIGH = 14,   /* DR: the real server's MAC is not known yet: dropped */
	STAT_DEST_GONE = 15,  /* the connection's real server was deleted: dropped, expired */
	STAT_NEW_CONN = 16,   /* connections created */
	STAT_ICMP_NAT = 17,   /* ICMP errors about a NAT connection, translated and sent */
	STAT_NO_ACCEPT = 18,  /* to a VIP of a VRRP master in no_accept mode: dropped */
	STAT_DUP_SYN = 19,    /* a SYN whose connection another CPU made at the same time: dropped */
	STAT_TABLE_FULL = 20, /* a new connection with the connection table full: dropped */
	STAT_TUN = 21,        /* TUN: encapsulated and sent to the real server */
	STAT_TUN_FAIL = 22,   /* TUN: no room to encapsulate, or no route: dropped */
	STAT_TUN_FRAG_NEEDED = 23, /* TUN: too big once encapsulated, DF: ICMP back to the client */
	STAT_TUN_TOO_BIG = 24,     /* TUN: too big once encapsulated, no DF: dropped */
	STAT_NAT_TOO_BIG = 25,     /* NAT: over the route's MTU with DF (answered, or to the kernel) */
	STAT_NAT_FRAG_NEEDED = 26, /* NAT: of those, a client's: ICMP back to it from the VIP */
	STAT_TTL_EXCEEDED = 27,    /* forwarding with TTL (hop limit) 1 or less: time exceeded */
	STAT_OTHER_HOST = 28,      /* to another host's MAC (flooded, promiscuous): to the kernel */
	STAT_TUN_ICMP = 29,        /* TUN: an ICMP error about a tunnel packet, relayed to the client */
	STAT_MAX = 30,
};

#endif
