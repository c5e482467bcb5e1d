/* The connection table: IPVS's TCP state machine, timeouts and per-server counts. */
#ifndef FULCRUM_CONN_H
#define FULCRUM_CONN_H

#include <linux/bpf.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include "constants.h"
#include "structs.h"
#include "maps.h"
#include "conntab.h"
#include "sched.h"

/* Which half of a flow a packet belongs to: the rows of IPVS's tcp_states table. */
enum conn_dir {
	DIR_INPUT = 0,      /* client -> server, replies seen (NAT) */
	DIR_OUTPUT = 1,     /* server -> client (NAT) */
	DIR_INPUT_ONLY = 2, /* client -> server, replies not seen (DR) */
};

#define sNO TCP_S_NONE
#define sES TCP_S_ESTABLISHED
#define sSS TCP_S_SYN_SENT
#define sSR TCP_S_SYN_RECV
#define sFW TCP_S_FIN_WAIT
#define sTW TCP_S_TIME_WAIT
#define sCL TCP_S_CLOSE
#define sCW TCP_S_CLOSE_WAIT
#define sLA TCP_S_LAST_ACK
#define sLI TCP_S_LISTEN
#define sSA TCP_S_SYNACK

/* [direction][event: syn, fin, ack, rst][state] -> next state, as the kernel's
 * net/netfilter/ipvs/ip_vs_proto_tcp.c defines it. */
static const __u8 tcp_next[3][4][11] = {
	{
		/* INPUT      sNO  sES  sSS  sSR  sFW  sTW  sCL  sCW  sLA  sLI  sSA */
		/* syn */ { sSR, sES, sES, sSR, sSR, sSR, sSR, sSR, sSR, sSR, sSR },
		/* fin */ { sCL, sCW, sSS, sTW, sTW, sTW, sCL, sCW, sLA, sLI, sTW },
		/* ack */ { sCL, sES, sSS, sES, sFW, sTW, sCL, sCW, sCL, sLI, sES },
		/* rst */ { sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sSR },
	},
	{
		/* OUTPUT */
		/* syn */ { sSS, sES, sSS, sSR, sSS, sSS, sSS, sSS, sSS, sLI, sSR },
		/* fin */ { sTW, sFW, sSS, sTW, sFW, sTW, sCL, sTW, sLA, sLI, sTW },
		/* ack */ { sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sLA, sES, sES },
		/* rst */ { sCL, sCL, sSS, sCL, sCL, sTW, sCL, sCL, sCL, sCL, sCL },
	},
	{
		/* INPUT-ONLY */
		/* syn */ { sSR, sES, sES, sSR, sSR, sSR, sSR, sSR, sSR, sSR, sSR },
		/* fin */ { sCL, sFW, sSS, sTW, sFW, sTW, sCL, sCW, sLA, sLI, sTW },
		/* ack */ { sCL, sES, sSS, sES, sFW, sTW, sCL, sCW, sCL, sLI, sES },
		/* rst */ { sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sCL },
	},
};

/* The TCP header's byte of flags (FIN 0x01, SYN 0x02, RST 0x04, ...). */
#define TCP_SYN_FIN_RST 0x07
static __always_inline __u8 tcp_flag_byte(const struct tcphdr *th)
{
	return ((const __u8 *)th)[13];
}

/* The event a TCP header carries, as tcp_state_idx: rst, then syn, fin, ack; -1 none. */
static __always_inline int tcp_event(const struct tcphdr *th)
{
	if (th->rst)
		return 3;
	if (th->syn)
		return 0;
	if (th->fin)
		return 1;
	if (th->ack)
		return 2;
	return -1;
}

static __always_inline struct dest_conns *conns_of(const struct conn *c)
{
	__u32 k = slot_index(c->svc, c->dest);
	return bpf_map_lookup_elem(&dest_conns, &k);
}

/* IPVS's connection thresholds (ip_vs_bind_dest, ip_vs_unbind_dest): a server is
 * overloaded once its connections reach the upper threshold, and no longer once they fall
 * below the lower one (or below 3/4 of the upper when there is no lower). */
static __always_inline void threshold_bind(struct dest *d, const struct dest_conns *dc)
{
	if (d->u_threshold && dc->active + dc->inactive >= d->u_threshold)
		d->flags |= DEST_F_OVERLOADED;
}

static __always_inline void threshold_release(struct dest *d, const struct dest_conns *dc)
{
	if (!(d->flags & DEST_F_OVERLOADED))
		return;
	__u64 total = (__u64)dc->active + dc->inactive;
	int clear;
	if (d->l_threshold)
		clear = total < d->l_threshold;
	else if (d->u_threshold)
		clear = total * 4 < (__u64)d->u_threshold * 3;
	else
		clear = 1;
	if (clear)
		d->flags &= ~DEST_F_OVERLOADED;
}

/* Moves a connection to `next`, moving it between the active and inactive counts as
 * the kernel's set_tcp_state does. Only the CPU whose compare-and-swap of c->counted
 * succeeds moves the count: a FIN from each side at once, on two CPUs, moves it once. */
static __always_inline void conn_set_state(struct conn *c, __u8 next)
{
	if (next == c->state)
		return;
	__u64 to = next == TCP_S_ESTABLISHED ? COUNTED_ACTIVE : COUNTED_INACTIVE;
	__u64 from = to == COUNTED_ACTIVE ? COUNTED_INACTIVE : COUNTED_ACTIVE;
	struct dest_conns *dc = conns_of(c);
	if (dc && __sync_val_compare_and_swap(&c->counted, from, to) == from) {
		if (to == COUNTED_ACTIVE) {
			__sync_fetch_and_add(&dc->inactive, -1);
			__sync_fetch_and_add(&dc->active, 1);
		} else {
			__sync_fetch_and_add(&dc->active, -1);
			__sync_fetch_and_add(&dc->inactive, 1);
		}
	}
	c->state = next;
}

static __always_inline __u32 timeout_s(__u8 state)
{
	__u32 k = state < STATE_MAX ? state : TCP_S_CLOSE;
	__u32 *t = bpf_map_lookup_elem(&timeouts, &k);
	return t ? *t : 60;
}

/* A packet of the connection went by: state and timer. The timeout is looked up only
 * when the state changes. */
static __always_inline void conn_touch(struct conn *c, const struct tcphdr *th, int dir, __u64 now)
{
	/* Most packets: an established connection's segment with no SYN, FIN or RST, which
	 * every direction's table leaves established; one load of the flags' byte. */
	if (th && (c->state != TCP_S_ESTABLISHED || (tcp_flag_byte(th) & TCP_SYN_FIN_RST))) {
		int ev = tcp_event(th);
		if (ev >= 0 && c->state < 11 && dir >= 0 && dir < 3) {
			__u8 next = tcp_next[dir][ev & 3][c->state];
			if (next != c->state) {
				conn_set_state(c, next);
				c->timeout = timeout_s(next);
			}
		}
	}
	c->expires = now + (__u64)c->timeout * NSEC_PER_SEC;
}

static __always_inline void reply_key(const struct conn *c, struct flow_key *k)
{
	k->src = c->rip;
	k->dst = c->client;
	k->sport = c->rport;
	k->dport = c->cport;
	k->proto = c->proto;
	k->pad[0] = k->pad[1] = k->pad[2] = 0;
}

static __always_inline void client_key(const struct conn *c, struct flow_key *k)
{
	k->src = c->client;
	k->dst = c->vip;
	k->sport = c->cport;
	k->dport = c->vport;
	k->proto = c->proto;
	k->pad[0] = k->pad[1] = k->pad[2] = 0;
}

/* A NAT connection's reply entry keeps a copy of its state, timeout and deadline for its
 * fast path: brought up to the client's entry `c`. */
static __always_inline void reply_follow(const struct conn *c)
{
	if (c->method != METHOD_NAT)
		return;
	struct flow_key rk;
	reply_key(c, &rk);
	struct conn *r = conn_get(&rk);
	if (r) {
		r->state = c->state;
		r->timeout = c->timeout;
		r->expires = c->expires;
	}
}

/* Takes the count a connection holds by swapping COUNTED_GONE in: only the CPU whose swap
 * succeeds gets it (and then gives it back and deletes the entry), so a connection
 * expired twice at once, or moved between counts while it is released, is counted out
 * once and from the count that holds it. COUNTED_GONE: someone else has it, or the swap
 * kept losing to state changes (the next packet or sweep tries again). */
static __always_inline __u64 conn_claim(struct conn *c)
{
#pragma unroll
	for (int i = 0; i < 3; i++) {
		__u64 seen = c->counted;
		if (seen == COUNTED_GONE)
			return COUNTED_GONE;
		if (__sync_val_compare_and_swap(&c->counted, seen, COUNTED_GONE) == seen)
			return seen;
	}
	return COUNTED_GONE;
}

/* Counts a connection newly in the table in `held` (COUNTED_ACTIVE or _INACTIVE) of the
 * real-server slot at index `k`, overloading the server at its upper threshold. */
static __always_inline void conn_count(__u32 k, __u64 held)
{
	struct dest_conns *dc = bpf_map_lookup_elem(&dest_conns, &k);
	if (!dc)
		return;
	if (held == COUNTED_ACTIVE)
		__sync_fetch_and_add(&dc->active, 1);
	else
		__sync_fetch_and_add(&dc->inactive, 1);
	struct dest *d = bpf_map_lookup_elem(&dests, &k);
	if (d)
		threshold_bind(d, dc);
}

/* Gives back the count `held` of the real-server slot at index `k`. */
static __always_inline void conn_uncount(__u32 k, __u64 held)
{
	struct dest_conns *dc = bpf_map_lookup_elem(&dest_conns, &k);
	if (!dc)
		return;
	if (held == COUNTED_INACTIVE)
		__sync_fetch_and_add(&dc->inactive, -1);
	else if (held == COUNTED_ACTIVE)
		__sync_fetch_and_add(&dc->active, -1);
	struct dest *d = bpf_map_lookup_elem(&dests, &k);
	if (d)
		threshold_release(d, dc);
}

/* Removes a connection and its reply entry, with its count (see conn_claim). */
static __always_inline void conn_release(const struct flow_key *key, struct conn *c)
{
	__u64 held = conn_claim(c);
	if (held == COUNTED_GONE)
		return;
	/* What is needed once the entry is gone, taken before: scalars and the reply's key,
	 * not a copy of the whole entry (the call chain's 512 bytes of stack are tight). */
	__u32 k = slot_index(c->svc, c->dest);
	int nat = c->method == METHOD_NAT;
	struct flow_key rk;
	reply_key(c, &rk);
	if (conn_del(key) != 0)
		return;
	conn_uncount(k, held);
	if (nat)
		conn_del(&rk);
}

/* IPv6: the keys of a connection's two entries. */
static __always_inline void client_key6(const struct conn6 *c, struct flow_key6 *k)
{
	__builtin_memcpy(k->src, c->client, 16);
	__builtin_memcpy(k->dst, c->vip, 16);
	k->sport = c->c.cport;
	k->dport = c->c.vport;
	k->proto = c->c.proto;
	k->pad[0] = k->pad[1] = k->pad[2] = 0;
}

static __always_inline void reply_key6(const struct conn6 *c, struct flow_key6 *k)
{
	__builtin_memcpy(k->src, c->rip, 16);
	__builtin_memcpy(k->dst, c->client, 16);
	k->sport = c->c.rport;
	k->dport = c->c.cport;
	k->proto = c->c.proto;
	k->pad[0] = k->pad[1] = k->pad[2] = 0;
}

/* reply_follow for IPv6. */
static __always_inline void reply_follow6(const struct conn6 *c)
{
	if (c->c.method != METHOD_NAT)
		return;
	struct flow_key6 rk;
	reply_key6(c, &rk);
	struct conn6 *r = conn_get6(&rk);
	if (r) {
		r->c.state = c->c.state;
		r->c.timeout = c->c.timeout;
		r->c.expires = c->c.expires;
	}
}

/* conn_release for IPv6. */
static __always_inline void conn_release6(const struct flow_key6 *key, struct conn6 *c)
{
	__u64 held = conn_claim(&c->c);
	if (held == COUNTED_GONE)
		return;
	__u32 k = slot_index(c->c.svc, c->c.dest);
	int nat = c->c.method == METHOD_NAT;
	struct flow_key6 rk;
	reply_key6(c, &rk);
	if (conn_del6(key) != 0)
		return;
	conn_uncount(k, held);
	if (nat)
		conn_del6(&rk);
}

#endif
