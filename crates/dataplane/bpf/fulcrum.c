// SPDX-License-Identifier: GPL-2.0
/* Fulcrum's XDP data plane: entry points. Classification and bounds checks here; the
 * schedulers are in include/sched.h, the connection table in include/conn.h, what each
 * counter means in include/constants.h.
 *
 * A packet of a tracked flow follows its connection; a new flow to a virtual service is
 * scheduled, tracked and forwarded by NAT (destination rewritten, replies rewritten
 * back) or DR (destination MAC rewritten). Everything else goes to the kernel. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "include/constants.h"
#include "include/structs.h"
#include "include/maps.h"
#include "include/parse.h"
#include "include/csum.h"
#include "include/sched.h"
#include "include/conn.h"

/* A parsed IPv4 TCP or UDP packet. */
struct packet {
	struct ethhdr *eth;
	struct iphdr *ip;
	struct tcphdr *tcp; /* NULL for UDP */
	struct udphdr *udp; /* NULL for TCP */
	__be16 *sport;
	__be16 *dport;
	__u16 *l4_csum;
	__u32 len; /* IP total length */
};

/* Counts a packet (and a new connection) to the real server in `slot` of service `svc`.
 * A service's own counts are its servers' summed by the control plane, with what the
 * servers it no longer has carried (svc_retired): one count a packet, not two. */
static __always_inline void account(__u32 svc, __u32 slot, __u32 len, int out, int new_conn)
{
	__u32 k = slot_index(svc, slot);
	struct traffic *t = bpf_map_lookup_elem(&dest_traffic, &k);
	if (!t)
		return;
	if (out) {
		t->outpkts++;
		t->outbytes += len;
	} else {
		t->inpkts++;
		t->inbytes += len;
	}
	if (new_conn)
		t->conns++;
}

/* Fills a FIB lookup from `src` to `dst` for a packet of `len` bytes (0: no MTU check), as
 * it arrived on the frame's interface; a lookup overwrites its fields, so each is filled
 * anew. */
static __always_inline void fib_params(struct xdp_md *ctx, struct bpf_fib_lookup *f, __be32 src,
				       __be32 dst, __u8 tos, __u8 proto, __u16 len)
{
	__builtin_memset(f, 0, sizeof(*f));
	f->family = AF_INET;
	f->tos = tos;
	f->l4_protocol = proto;
	f->tot_len = len;
	f->ipv4_src = src;
	f->ipv4_dst = dst;
	f->ifindex = ctx->ingress_ifindex;
}

/* fib_params for IPv6. */
static __always_inline void fib_params6(struct xdp_md *ctx, struct bpf_fib_lookup *f,
					const __u8 *src, const __u8 *dst, __u8 proto, __u16 len)
{
	__builtin_memset(f, 0, sizeof(*f));
	f->family = AF_INET6;
	f->l4_protocol = proto;
	f->tot_len = len;
	__builtin_memcpy(f->ipv6_src, src, 16);
	__builtin_memcpy(f->ipv6_dst, dst, 16);
	f->ifindex = ctx->ingress_ifindex;
}

/* The next hop towards `dst` by the kernel's FIB: MACs from the neighbour table, out of
 * the interface the route names (NAT and TUN: the director forwards, so ip_forward is on,
 * which the lookup requires). The answer is cached in the connection entry `c` until the
 * control plane's route generation moves (`gen`: route_gen(), as the caller read it for
 * the packet); with `want_mtu` (NAT, TUN), the route's MTU
 * too. -1 when the kernel must route it itself (no route, the neighbour not resolved yet,
 * or `tot_len` over the route's MTU). */
static __always_inline int route_lookup(struct xdp_md *ctx, struct conn *c, __u32 gen, __be32 src,
					__be32 dst, __u8 tos, __u8 proto, __u16 tot_len, int want_mtu)
{
	if (c->ifindex && c->route_gen == gen)
		return 0;
	/* An MTU a router told about before the route was first cached (tun_icmp) stays,
	 * when smaller; a route change (the generation) forgets it. */
	__u16 told = c->ifindex ? 0 : c->mtu;
	struct bpf_fib_lookup f;
	fib_params(ctx, &f, src, dst, tos, proto, tot_len);
	if (bpf_fib_lookup(ctx, &f, sizeof(f), 0) != BPF_FIB_LKUP_RET_SUCCESS)
		return -1;
	c->ifindex = f.ifindex;
	__builtin_memcpy(c->dmac, f.dmac, ETH_ALEN);
	__builtin_memcpy(c->smac, f.smac, ETH_ALEN);
	c->mtu = 0;
	if (want_mtu) {
		/* The lookup tells the MTU (the route's, learnt path MTUs included) only to a
		 * length over it: asked again with the largest. */
		fib_params(ctx, &f, src, dst, tos, proto, 0xffff);
		if (bpf_fib_lookup(ctx, &f, sizeof(f), 0) == BPF_FIB_LKUP_RET_FRAG_NEEDED)
			c->mtu = f.mtu_result;
		if (told && (!c->mtu || told < c->mtu))
			c->mtu = told;
	}
	c->route_gen = gen;
	return 0;
}

/* Sends the frame whose Ethernet header is `eth` to the next hop cached in `c`. */
static __always_inline int route_out(struct xdp_md *ctx, struct ethhdr *eth, const struct conn *c)
{
	__builtin_memcpy(eth->h_dest, c->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, c->smac, ETH_ALEN);
	if (c->ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(c->ifindex, 0);
}

/* route_lookup and route_out for the parsed packet as it is, towards `dst` (the route's
 * MTU cached with it, for the NAT paths that share the entry). */
static __always_inline int fib_send(struct xdp_md *ctx, struct packet *p, __be32 dst,
				    struct conn *c)
{
	if (route_lookup(ctx, c, route_gen(), p->ip->saddr, dst, p->ip->tos, p->ip->protocol, 0,
			 1))
		return -1;
	return route_out(ctx, p->eth, c);
}

/* The checksum of a 20-byte IPv4 header whose check field is zero. */
static __always_inline __u16 ipv4_header_csum(const struct iphdr *ip)
{
	const __u16 *w = (const __u16 *)ip;
	__u32 s = 0;
#pragma unroll
	for (int i = 0; i < 10; i++)
		s += w[i];
	return (__u16)~csum_fold32(s);
}

/* IPVS's decrement_ttl, for every packet it forwards (NAT, DR, TUN) and the kernel's for
 * what it forwards itself: the TTL one less (`by` -1), or back (`by` 1) when the packet
 * goes to the kernel after all, which takes its own one off; the header checksum follows
 * (the TTL shares its 16-bit word with the protocol). */
static __always_inline void ttl_move(struct iphdr *ip, int by)
{
	__u16 *w = (__u16 *)&ip->ttl;
	__u16 old = *w;
	ip->ttl += by;
	csum_replace2(&ip->check, old, *w);
}

/* The ICMP error icmp_answer sends: the header, then the start of the packet it is about
 * (its 20-byte IP header and first 8 bytes, RFC 792's minimum: the client's stack finds the
 * socket by the ports and checks the sequence number in them). */
struct icmp_error_msg {
	struct icmphdr h;
	__u8 about[sizeof(struct iphdr) + 8];
};

/* Makes the frame an error about itself: `grow` bytes of room in front (for the new
 * headers), then the whole cut to `keep` bytes. -1 when the frame cannot be. */
static __always_inline int reframe(struct xdp_md *ctx, int grow, int keep)
{
	if (bpf_xdp_adjust_head(ctx, -grow))
		return -1;
	int cut = (int)((long)ctx->data_end - (long)ctx->data) - keep;
	if (cut < 0 || bpf_xdp_adjust_tail(ctx, -cut))
		return -1;
	return 0;
}

/* Answers the frame in `ctx` (an IPv4 packet, untranslated) with an ICMP error of `type`
 * and `code` carrying `info` (a "fragmentation needed"'s MTU, else 0), from its
 * destination to its source, as the kernel's icmp_send answers from a local address: the
 * frame becomes the ICMP error and goes back out (XDP_TX). A global function (verified on
 * its own): it parses what it needs itself, so its callers' stack holds nothing more for
 * it. */
__attribute__((noinline)) int icmp_answer(struct xdp_md *ctx, __u32 type, __u32 code, __u32 info)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = HEADER(data, end, struct ethhdr);
	if (!eth)
		return XDP_DROP;
	struct iphdr *ip = HEADER(eth + 1, end, struct iphdr);
	if (!ip || ip->ihl != 5)
		return XDP_DROP;
	__u8 tos = (ip->tos & 0x1e) | 0xc0; /* IPTOS_PREC_INTERNETCONTROL, as icmp_send */
	__be32 from = ip->daddr, to = ip->saddr;
	__u8 mac[2][ETH_ALEN];
	__builtin_memcpy(mac[0], eth->h_source, ETH_ALEN);
	__builtin_memcpy(mac[1], eth->h_dest, ETH_ALEN);
	/* Room for the new IP and ICMP headers in front of the old IP header, which then
	 * starts the ICMP payload, and the frame cut after its first 28 bytes. */
	if (reframe(ctx, sizeof(struct iphdr) + sizeof(struct icmphdr),
		    sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct icmp_error_msg)))
		return XDP_DROP;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	eth = HEADER(data, end, struct ethhdr);
	if (!eth)
		return XDP_DROP;
	ip = HEADER(eth + 1, end, struct iphdr);
	if (!ip)
		return XDP_DROP;
	struct icmp_error_msg *icmp = HEADER(ip + 1, end, struct icmp_error_msg);
	if (!icmp)
		return XDP_DROP;
	__builtin_memcpy(eth->h_dest, mac[0], ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac[1], ETH_ALEN);
	eth->h_proto = ETH_P_IP_BE;
	ip->version = 4;
	ip->ihl = 5;
	ip->tos = tos;
	ip->tot_len = bpf_htons(sizeof(struct iphdr) + sizeof(struct icmp_error_msg));
	ip->id = 0;
	ip->frag_off = 0;
	ip->ttl = 64;
	ip->protocol = IPPROTO_ICMP;
	ip->check = 0;
	ip->saddr = from;
	ip->daddr = to;
	ip->check = ipv4_header_csum(ip);
	icmp->h.type = type;
	icmp->h.code = code;
	icmp->h.checksum = 0;
	icmp->h.rest = bpf_htonl(info);
	const __u16 *w = (const __u16 *)icmp;
	__u32 sum = 0;
#pragma unroll
	for (int i = 0; i < (int)sizeof(*icmp) / 2; i++)
		sum += w[i];
	icmp->h.checksum = (__u16)~csum_fold32(sum);
	return XDP_TX;
}

/* NAT, a packet over the MTU of its route (`mtu`), as IPVS meets it: a client's packet
 * with DF gets "fragmentation needed" from the VIP before any translation
 * (ip_vs_nat_xmit's icmp_send); a real server's reply with DF goes to the kernel
 * untranslated, whose forwarding answers the real server from this host's own address
 * (ip_forward's MTU check comes before IPVS's reply hook). Without DF, it is translated
 * and handed to the kernel, which fragments it as IPVS's path does. -1: not too big. */
static __always_inline int nat_too_big(struct xdp_md *ctx, struct packet *p, __u32 mtu,
				       int from_client)
{
	if (!mtu || p->len <= mtu)
		return -1;
	if (!(p->ip->frag_off & bpf_htons(IP_DF)))
		return -2; /* translated, then to the kernel */
	count(STAT_NAT_TOO_BIG);
	if (!from_client || mtu < 68)
		return XDP_PASS;
	int verdict = icmp_answer(ctx, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, mtu);
	if (verdict == XDP_TX)
		count(STAT_NAT_FRAG_NEEDED);
	return verdict;
}

/* A client's packet with TTL 1 or less, which IPVS does not forward: ICMP "time exceeded"
 * from the VIP (icmp_send from decrement_ttl, the packet's destination being local). The
 * parsed packet is not valid after this. */
static __always_inline int ttl_exceeded(struct xdp_md *ctx)
{
	count(STAT_TTL_EXCEEDED);
	return icmp_answer(ctx, ICMP_TIME_EXCEEDED, ICMP_EXC_TTL, 0);
}

/* The MTU of the route from `src` to `dst` when a packet of `len` bytes is over it, else
 * 0: for a packet the kernel must route (its next hop not resolved yet), whose size the
 * kernel would otherwise answer after translation, naming the wrong address. The FIB
 * checks the length before it looks for the neighbour. */
static __always_inline __u32 mtu_over(struct xdp_md *ctx, __be32 src, __be32 dst, __u8 tos,
				      __u8 proto, __u16 len)
{
	struct bpf_fib_lookup f;
	fib_params(ctx, &f, src, dst, tos, proto, len);
	if (bpf_fib_lookup(ctx, &f, sizeof(f), 0) == BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return f.mtu_result;
	return 0;
}

/* Sums the `left` bytes of the frame from `off`, 64 at a time with bpf_csum_diff and then
 * 2 at a time. */
struct sum_walk {
	struct xdp_md *ctx;
	__u32 off;
	__u32 left;
	__u64 sum;
};

static long sum_cb(__u32 i, void *arg)
{
	struct sum_walk *w = arg;
	if (!w->left)
		return 1;
	void *data = (void *)(long)w->ctx->data;
	void *end = (void *)(long)w->ctx->data_end;
	/* A frame in XDP (without fragments) is at most a page: the mask lets the verifier
	 * see the offset stays in range. */
	void *p = data + (w->off & 0x1fff);
	if (w->left >= 64) {
		if (p + 64 > end)
			return 1;
		w->sum += (__u32)bpf_csum_diff(0, 0, p, 64, 0);
		w->off += 64;
		w->left -= 64;
	} else if (w->left >= 2) {
		if (p + 2 > end)
			return 1;
		w->sum += *(__u16 *)p;
		w->off += 2;
		w->left -= 2;
	} else {
		/* The last odd byte, as the first of a word padded with zero. */
		if (p + 1 > end)
			return 1;
		w->sum += *(__u8 *)p;
		w->left = 0;
	}
	return 0;
}

/* The one's-complement sum of a client's packet at `off` in the frame (a 20-byte IPv4
 * header and a TCP segment or UDP datagram), for an outer checksum over it. A valid IPv4
 * header sums to zero, and a TCP segment or UDP datagram with a checksum to the
 * complement of its pseudo-header (the kernel's local checksum offload, lco_csum, takes
 * the same shortcut): so only a UDP datagram without a checksum is read through. -1 when
 * the frame ends before the packet does. */
static __always_inline __s64 inner_sum(struct xdp_md *ctx, __u32 off)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct iphdr *ip = HEADER(data + (off & 0xff), end, struct iphdr);
	if (!ip)
		return -1;
	struct udphdr *u = HEADER(ip + 1, end, struct udphdr);
	if (!u)
		return -1;
	__u16 l4_len = bpf_ntohs(ip->tot_len) - sizeof(struct iphdr);
	if (ip->protocol == IPPROTO_TCP || u->check)
		return (__u16)~csum_fold32(pseudo_sum(ip->saddr, ip->daddr, ip->protocol, l4_len));
	struct sum_walk w = { .ctx = ctx, .off = off + sizeof(struct iphdr), .left = l4_len };
	bpf_loop(8192 / 64 + 32, sum_cb, &w, 0);
	if (w.left)
		return -1;
	return csum_fold64(w.sum);
}

/* The one's-complement sum of a client's IPv6 packet at `off` in the frame (the 40-byte
 * header, then a TCP segment or UDP datagram), for an outer checksum over it, as
 * inner_sum: the header is summed (it has no checksum of its own), the segment is the
 * complement of its pseudo-header unless a UDP datagram carries no checksum. -1 when the
 * frame ends before the packet does. */
static __always_inline __s64 inner_sum6(struct xdp_md *ctx, __u32 off)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ipv6hdr *ip = HEADER(data + (off & 0xff), end, struct ipv6hdr);
	if (!ip)
		return -1;
	struct udphdr *u = HEADER(ip + 1, end, struct udphdr);
	if (!u)
		return -1;
	__u16 l4_len = bpf_ntohs(ip->payload_len);
	__u64 sum;
	if (ip->nexthdr == IPPROTO_TCP || u->check) {
		const __u32 *a = (const __u32 *)&ip->saddr;
		__u64 pseudo = (__u64)bpf_htons(l4_len) + bpf_htons((__u16)ip->nexthdr);
#pragma unroll
		for (int i = 0; i < 8; i++)
			pseudo += (__u64)(a[i] & 0xffff) + (a[i] >> 16);
		sum = (__u16)~csum_fold64(pseudo);
	} else {
		/* Nothing else live across the walk: the verifier checks its callback the
		 * fewer times. */
		struct sum_walk wk = {
			.ctx = ctx, .off = off + sizeof(struct ipv6hdr), .left = l4_len
		};
		bpf_loop(8192 / 64 + 32, sum_cb, &wk, 0);
		if (wk.left)
			return -1;
		sum = csum_fold64(wk.sum);
		data = (void *)(long)ctx->data;
		end = (void *)(long)ctx->data_end;
		ip = HEADER(data + (off & 0xff), end, struct ipv6hdr);
		if (!ip)
			return -1;
	}
	const __u16 *w = (const __u16 *)ip;
#pragma unroll
	for (int i = 0; i < 20; i++)
		sum += w[i];
	return sum;
}

/* The last step of an outer checksum, for tun_checksum and tun_checksum6: `h` the
 * tunnel's own header (8 bytes there), `sum` the client's packet's, `addrs` the outer
 * addresses' (gue's pseudo-header takes them, the protocol and the UDP length). gue: the
 * UDP header, its checksum field zero, then the GUE header; gre: flags and protocol, then
 * the checksum and reserved fields, zero. */
static __always_inline int put_tunnel_checksum(__u16 *h, void *end, __u32 type, __u64 sum,
					       __u64 addrs)
{
	__u64 s = sum + h[0] + h[1] + h[2] + h[3];
	if (type != TUN_GUE) {
		h[2] = ~csum_fold64(s);
		return 0;
	}
	__u16 *g = (__u16 *)HEADER(h + 4, end, __u32);
	if (!g)
		return -1;
	s += g[0] + g[1] + addrs + bpf_htons(IPPROTO_UDP) + h[2];
	__u16 check = ~csum_fold64(s);
	h[3] = check ? check : 0xffff;
	return 0;
}

/* Fills in the outer checksum of a frame tun_encap has just encapsulated in IPv4 (around
 * an IPv6 packet, `inner_v6`, or an IPv4 one): gue's UDP
 * checksum (over the outer pseudo-header, the UDP and GUE headers and the client's
 * packet), or gre's (the C bit is set; over the GRE header and the packet, RFC 2784).
 * A function of its own, verified once, whose stack is not that of the calls that
 * schedule. 0, or -1 when the frame is not as it should be. */
__attribute__((noinline)) int tun_checksum(struct xdp_md *ctx, __u32 type, __u32 inner_v6)
{
	__u32 off = sizeof(struct ethhdr) + sizeof(struct iphdr) + (type == TUN_GUE ? 12 : 8);
	__s64 sum = inner_v6 ? inner_sum6(ctx, off) : inner_sum(ctx, off);
	if (sum < 0)
		return -1;
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct iphdr *o = HEADER(data + sizeof(struct ethhdr), end, struct iphdr);
	if (!o)
		return -1;
	__u16 *h = (__u16 *)HEADER(o + 1, end, __u64);
	if (!h)
		return -1;
	__u64 addrs = (o->saddr & 0xffff) + (o->saddr >> 16) + (o->daddr & 0xffff) + (o->daddr >> 16);
	return put_tunnel_checksum(h, end, type, sum, addrs);
}

/* Writes a tunnel's own header at `h`, after the outer IP header: gue's UDP header (from
 * `sport` to `port`, no checksum yet) and GUE header (version 0, no options, naming the
 * inner packet's protocol), or gre's (RFC 2784: with `csum`, the C bit and room for the
 * checksum and 16 reserved bits); ipip has none. `inner_len`: the client's packet;
 * `inner_v6`: whether it is IPv6. -1 when the frame is shorter. */
static __always_inline int tunnel_header(void *h, void *end, __u8 type, int csum, __u16 sport,
					 __be16 port, __u16 inner_len, int inner_v6)
{
	if (type == TUN_GUE) {
		struct udphdr *u = HEADER(h, end, struct udphdr);
		if (!u)
			return -1;
		__u8 *g = (__u8 *)HEADER(u + 1, end, __u32);
		if (!g)
			return -1;
		u->source = bpf_htons(sport);
		u->dest = port;
		u->len = bpf_htons(inner_len + 8 + 4);
		u->check = 0;
		g[0] = 0;
		g[1] = inner_v6 ? IPPROTO_IPV6 : IPPROTO_IPIP;
		g[2] = 0;
		g[3] = 0;
	} else if (type == TUN_GRE) {
		__be16 *g = (__be16 *)HEADER(h, end, __u32);
		if (!g)
			return -1;
		g[0] = 0;
		g[1] = inner_v6 ? bpf_htons(ETH_P_IPV6) : bpf_htons(ETH_P_IP);
		if (csum) {
			__be16 *x = (__be16 *)HEADER(g + 2, end, __u32);
			if (!x)
				return -1;
			g[0] = bpf_htons(0x8000);
			x[0] = 0;
			x[1] = 0;
		}
	}
	return 0;
}

/* Rewrites one side of the flow (an address in the IP header and the port beside it in
 * the L4 header) with incremental checksum updates; a UDP checksum of 0 stays 0. */
static __always_inline void rewrite(struct packet *p, __be32 *addr, __be16 *port,
				    __be32 to_addr, __be16 to_port)
{
	csum_replace4(&p->ip->check, *addr, to_addr);
	if (*p->l4_csum || p->tcp) {
		csum_replace6(p->l4_csum, *addr, *port, to_addr, to_port);
		if (!p->tcp && !*p->l4_csum)
			*p->l4_csum = 0xffff;
	}
	*addr = to_addr;
	*port = to_port;
}

int tun_encap(struct xdp_md *ctx, struct conn *c, const struct dest *d, __u32 inner_v6);

/* Client -> server of an established connection: to the real server in slot `d`, or
 * (DR, NAT; `d` NULL) to the next hop the entry keeps; `gen`, the route generation. */
static __always_inline int forward(struct xdp_md *ctx, struct packet *p, struct conn *c,
				   const struct dest *d, __u32 gen)
{
	if (p->ip->ttl <= 1)
		return ttl_exceeded(ctx);
	ttl_move(p->ip, -1);
	if (c->method == METHOD_TUN) {
		if (!d)
			return XDP_DROP;
		int verdict = tun_encap(ctx, c, d, 0);
		if (verdict >= 0)
			return verdict;
		/* IPVS's answer to a client's packet too big once encapsulated (with DF). */
		verdict = icmp_answer(ctx, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, -verdict);
		if (verdict == XDP_TX)
			count(STAT_TUN_FRAG_NEEDED);
		return verdict;
	}
	if (c->method == METHOD_DR) {
		/* Only the destination MAC changes, to the real server's, which the control
		 * plane keeps from the neighbour table; kept in the entry for the packets
		 * after. */
		if (d) {
			if (!(d->mac[0] | d->mac[1] | d->mac[2] | d->mac[3] | d->mac[4] |
			      d->mac[5])) {
				count(STAT_NO_NEIGH);
				return XDP_DROP;
			}
			__builtin_memcpy(c->dmac, d->mac, ETH_ALEN);
			__builtin_memcpy(c->smac, d->smac, ETH_ALEN);
			c->ifindex = d->ifindex ? d->ifindex : ctx->ingress_ifindex;
			c->route_gen = gen;
		}
		count(STAT_DR);
		return route_out(ctx, p->eth, c);
	}
	/* The route (and its MTU) first: a packet too big for it is answered untranslated. */
	int routed =
		!route_lookup(ctx, c, gen, p->ip->saddr, c->rip, p->ip->tos, p->ip->protocol, 0, 1);
	__u32 mtu = routed ? c->mtu
			   : mtu_over(ctx, p->ip->saddr, c->rip, p->ip->tos, p->ip->protocol, p->len);
	int big = nat_too_big(ctx, p, mtu, 1);
	if (big >= 0)
		return big;
	rewrite(p, &p->ip->daddr, p->dport, c->rip, c->rport);
	if (!routed || big == -2) {
		/* The kernel forwards it, and takes the TTL down itself. */
		ttl_move(p->ip, 1);
		if (!routed)
			count(STAT_FIB_PASS);
		return XDP_PASS;
	}
	count(STAT_NAT_IN);
	return route_out(ctx, p->eth, c);
}

/* Real server -> client of a NAT connection: the source becomes the VIP again. */
static __always_inline int reply(struct xdp_md *ctx, struct packet *p, struct conn *r, __u64 now,
				 __u32 gen)
{
	/* The kernel's forwarding, which IPVS's reply path follows, answers a packet whose
	 * TTL runs out (from this host's own address). */
	if (p->ip->ttl <= 1) {
		count(STAT_TTL_EXCEEDED);
		return XDP_PASS;
	}
	/* An ACK of an established TCP connection changes no state: the reply entry's copy
	 * of the state says so, and the client's entry is left to the client's packets. */
	if (p->tcp && r->state == TCP_S_ESTABLISHED && !p->tcp->syn && !p->tcp->fin &&
	    !p->tcp->rst) {
		r->expires = now + (__u64)r->timeout * NSEC_PER_SEC;
		goto send;
	}
	struct flow_key ck;
	client_key(r, &ck);
	struct conn *c = conn_get(&ck);
	if (c) {
		conn_touch(c, p->tcp, DIR_OUTPUT, now);
		r->expires = c->expires;
		r->state = c->state;
		r->timeout = c->timeout;
	} else {
		/* One-packet scheduling, or the client's entry was evicted. */
		r->expires = now + (__u64)r->timeout * NSEC_PER_SEC;
	}
send:
	account(r->svc, r->dest, p->len, 1, 0);
	int routed =
		!route_lookup(ctx, r, gen, r->vip, r->client, p->ip->tos, p->ip->protocol, 0, 1);
	__u32 mtu = routed ? r->mtu
			   : mtu_over(ctx, r->vip, r->client, p->ip->tos, p->ip->protocol, p->len);
	int big = nat_too_big(ctx, p, mtu, 0);
	if (big >= 0)
		return big;
	rewrite(p, &p->ip->saddr, p->sport, r->vip, r->vport);
	if (!routed) {
		count(STAT_FIB_PASS);
		return XDP_PASS;
	}
	if (big == -2)
		return XDP_PASS;
	ttl_move(p->ip, -1);
	count(STAT_NAT_OUT);
	return route_out(ctx, p->eth, r);
}

/* An ICMP error (unreachable, time exceeded, parameter problem, source quench) about a
 * NAT connection, translated as IPVS does: about a packet we sent to the real server
 * (inner client -> RIP), it reaches the client as if about VIP; about a reply we sent to
 * the client (inner VIP -> client), it reaches the real server. -1: not ours. */
static __always_inline int icmp_error(struct xdp_md *ctx, struct packet *p, void *end)
{
	struct icmphdr *icmp = HEADER(p->ip + 1, end, struct icmphdr);
	if (!icmp)
		return -1;
	if (icmp->type != ICMP_DEST_UNREACH && icmp->type != ICMP_TIME_EXCEEDED &&
	    icmp->type != ICMP_PARAMETERPROB && icmp->type != ICMP_SOURCE_QUENCH)
		return -1;
	struct iphdr *in = HEADER(icmp + 1, end, struct iphdr);
	if (!in || in->ihl != 5 || (in->protocol != IPPROTO_TCP && in->protocol != IPPROTO_UDP))
		return -1;
	struct l4ports *ports = HEADER(in + 1, end, struct l4ports);
	if (!ports)
		return -1;
	/* The inner packet's flow, reversed, is the key of the entry that sent it. */
	struct flow_key k = {
		.src = in->daddr,
		.dst = in->saddr,
		.sport = ports->dest,
		.dport = ports->source,
		.proto = in->protocol,
	};
	struct conn *c = conn_get(&k);
	if (!c || c->method != METHOD_NAT)
		return -1;
	/* No error is sent about an error: one whose TTL runs out goes. */
	if (p->ip->ttl <= 1) {
		count(STAT_TTL_EXCEEDED);
		return XDP_DROP;
	}
	__u16 old_check = in->check;
	int to_client = c->flags & CONN_F_REPLY;
	__be32 from = to_client ? in->daddr : in->saddr;
	__be32 to = to_client ? c->vip : c->rip;
	__be16 pfrom = to_client ? ports->dest : ports->source;
	__be16 pto = to_client ? c->vport : c->rport;
	/* The inner address and port, the inner header checksum, and the ICMP checksum
	 * that covers them all. */
	csum_replace4(&in->check, from, to);
	csum_replace4(&icmp->checksum, from, to);
	csum_replace2(&icmp->checksum, old_check, in->check);
	csum_replace2(&icmp->checksum, pfrom, pto);
	if (to_client) {
		in->daddr = to;
		ports->dest = pto;
		/* Sent by the real server itself: it speaks as the VIP. */
		if (p->ip->saddr == c->rip) {
			csum_replace4(&p->ip->check, p->ip->saddr, c->vip);
			p->ip->saddr = c->vip;
		}
	} else {
		in->saddr = to;
		ports->source = pto;
		csum_replace4(&p->ip->check, p->ip->daddr, c->rip);
		p->ip->daddr = c->rip;
	}
	count(STAT_ICMP_NAT);
	ttl_move(p->ip, -1);
	int verdict = fib_send(ctx, p, p->ip->daddr, c);
	if (verdict < 0) {
		ttl_move(p->ip, 1);
		return XDP_PASS;
	}
	return verdict;
}

/* An ICMP error about a packet TUN sent (a router on the way to the real server answers
 * the tunnel's source, this director), relayed as IPVS's ip_vs_in_icmp relays it: to the
 * client, from the VIP, about the client's own packet (quoted after the tunnel's headers),
 * with the same type and code; a "fragmentation needed" carries the MTU less the tunnel's
 * headers (as the kernel's fix of 2026 does for gue and gre: before it, IPVS took off only
 * the outer IP header's 20 bytes), and is dropped when the client's packet had no DF (it
 * does not do path MTU discovery). The connection's cached route MTU takes the smaller
 * MTU, so the next packet too big is answered here at once. A global function: it parses
 * the frame itself. -1: not about a tunnel packet of a connection. */
__attribute__((noinline)) int tun_icmp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = HEADER(data, end, struct ethhdr);
	if (!eth)
		return -1;
	struct iphdr *ip = HEADER(eth + 1, end, struct iphdr);
	if (!ip || ip->ihl != 5 || ip->protocol != IPPROTO_ICMP)
		return -1;
	struct icmphdr *icmp = HEADER(ip + 1, end, struct icmphdr);
	if (!icmp)
		return -1;
	if (icmp->type != ICMP_DEST_UNREACH && icmp->type != ICMP_TIME_EXCEEDED &&
	    icmp->type != ICMP_PARAMETERPROB && icmp->type != ICMP_SOURCE_QUENCH)
		return -1;
	struct iphdr *outer = HEADER(icmp + 1, end, struct iphdr);
	if (!outer || outer->ihl != 5 || (outer->frag_off & bpf_htons(IP_OFFSET)))
		return -1;
	/* The tunnel's own header, after the quoted outer IP header. */
	__u32 ulen;
	if (outer->protocol == IPPROTO_IPIP) {
		ulen = 0;
	} else if (outer->protocol == IPPROTO_UDP) {
		__u8 *g = (__u8 *)HEADER((void *)(outer + 1) + sizeof(struct udphdr), end, __u32);
		if (!g || (g[0] & 0xe0) || g[1] != IPPROTO_IPIP)
			return -1;
		ulen = sizeof(struct udphdr) + 4 + (g[0] & 0x1f) * 4;
	} else if (outer->protocol == IPPROTO_GRE) {
		__be16 *g = (__be16 *)HEADER(outer + 1, end, __u32);
		if (!g || g[1] != bpf_htons(ETH_P_IP) || (g[0] & ~bpf_htons(0x8000)))
			return -1;
		ulen = (g[0] & bpf_htons(0x8000)) ? 8 : 4;
	} else {
		return -1;
	}
	/* The client's packet: its header and first 8 bytes, for its connection and for the
	 * error that quotes it. */
	struct iphdr *in = HEADER((void *)(outer + 1) + (ulen & 0x7f), end, struct iphdr);
	if (!in || in->ihl != 5 || !HEADER(in + 1, end, __u64))
		return -1;
	struct l4ports *ports = (struct l4ports *)(in + 1);
	struct flow_key k = {
		.src = in->saddr,
		.dst = in->daddr,
		.sport = ports->source,
		.dport = ports->dest,
		.proto = in->protocol,
	};
	struct conn *c = conn_get(&k);
	if (!c || c->method != METHOD_TUN || c->rip != outer->daddr)
		return -1;
	__u32 type = icmp->type, code = icmp->code;
	__u32 info = bpf_ntohl(icmp->rest);
	if (type == ICMP_DEST_UNREACH && code == ICMP_FRAG_NEEDED) {
		__u32 mtu = info & 0xffff;
		if (mtu >= 68 && (!c->mtu || mtu < c->mtu))
			c->mtu = mtu;
		if (!(in->frag_off & bpf_htons(IP_DF))) {
			count(STAT_TUN_TOO_BIG);
			return XDP_DROP;
		}
		if (mtu > 68 + sizeof(struct iphdr) + ulen)
			mtu -= sizeof(struct iphdr) + ulen;
		info = mtu;
	}
	/* The frame becomes the client's packet as the error quotes it, which icmp_answer
	 * answers from its destination (the VIP) to its source. */
	int strip = 2 * sizeof(struct iphdr) + sizeof(struct icmphdr) + (ulen & 0x7f);
	if (bpf_xdp_adjust_head(ctx, strip))
		return XDP_DROP;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	eth = HEADER(data, end, struct ethhdr);
	if (!eth)
		return XDP_DROP;
	eth->h_proto = ETH_P_IP_BE;
	if (icmp_answer(ctx, type, code, info) != XDP_TX)
		return XDP_DROP;
	/* Not back where it came from: to the client, by the kernel's FIB. */
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	eth = HEADER(data, end, struct ethhdr);
	if (!eth)
		return XDP_DROP;
	ip = HEADER(eth + 1, end, struct iphdr);
	if (!ip)
		return XDP_DROP;
	struct bpf_fib_lookup f;
	fib_params(ctx, &f, ip->saddr, ip->daddr, ip->tos, IPPROTO_ICMP, 0);
	if (bpf_fib_lookup(ctx, &f, sizeof(f), 0) != BPF_FIB_LKUP_RET_SUCCESS) {
		count(STAT_TUN_FAIL);
		return XDP_DROP;
	}
	__builtin_memcpy(eth->h_dest, f.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, f.smac, ETH_ALEN);
	count(STAT_TUN_ICMP);
	if (f.ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(f.ifindex, 0);
}

/* Whether the frame is another host's (counted so): the kernel gets it as it came. A
 * director overhears such frames where a switch floods or a bridge repeats them. */
static __always_inline int other_host(struct xdp_md *ctx, const struct ethhdr *eth)
{
	if (for_this_host(ctx->ingress_ifindex, eth->h_dest))
		return 0;
	count(STAT_OTHER_HOST);
	return 1;
}

/* other_host, asked only when the connection entry `c` (if any) cannot answer: an entry
 * whose next hop, cached in route generation `gen`, leaves by the interface the frame
 * came in on holds that interface's MAC, so a frame sent to it is this host's (DR's
 * packets, one-armed NAT's) with no look at the host's MACs. */
static __always_inline int other_host_but(struct xdp_md *ctx, const struct ethhdr *eth,
					  const struct conn *c, __u32 gen)
{
	if (c && c->ifindex == ctx->ingress_ifindex && c->route_gen == gen &&
	    same_mac(eth->h_dest, c->smac))
		return 0;
	return other_host(ctx, eth);
}

/* XDP_PASS, counted as `reason`, or as another host's frame when it is one. */
static __always_inline int pass_as(struct xdp_md *ctx, const struct ethhdr *eth, __u32 reason)
{
	if (!other_host(ctx, eth))
		count(reason);
	return XDP_PASS;
}

/* pass_as for an IPv6 frame, which this host's are counted as too. */
static __always_inline int pass_as6(struct xdp_md *ctx, const struct ethhdr *eth, __u32 reason)
{
	if (!other_host(ctx, eth)) {
		count(STAT_IPV6);
		count(reason);
	}
	return XDP_PASS;
}

/* Hands a packet that no service takes to the kernel, unless it is for the VIP of a
 * no_accept master. */
static __always_inline int to_kernel(struct packet *p)
{
	if (p->ip->protocol != IPPROTO_VRRP && refused(p->ip->daddr)) {
		count(STAT_NO_ACCEPT);
		return XDP_DROP;
	}
	return XDP_PASS;
}

/* IPv6 goes to the kernel, unless it is for the VIP of a no_accept master: then only
 * VRRP and neighbour discovery pass (RFC 5798 6.4.3: the master answers neighbour
 * solicitations for its VIPs even when it does not accept their traffic). */
static __always_inline int ipv6_to_kernel(void *l3, void *end)
{
	struct ipv6hdr *ip6 = HEADER(l3, end, struct ipv6hdr);
	if (!ip6 || ip6->nexthdr == IPPROTO_VRRP)
		return XDP_PASS;
	if (!bpf_map_lookup_elem(&no_accept6, &ip6->daddr))
		return XDP_PASS;
	if (ip6->nexthdr == IPPROTO_ICMPV6) {
		struct icmphdr *icmp = HEADER(ip6 + 1, end, struct icmphdr);
		if (icmp && (icmp->type == ND_NEIGHBOR_SOLICIT || icmp->type == ND_NEIGHBOR_ADVERT))
			return XDP_PASS;
	}
	count(STAT_NO_ACCEPT);
	return XDP_DROP;
}

/* Whether a TCP segment with no connection entry starts one: a SYN (not a RST), as IPVS;
 * with the service's sloppy_tcp, any segment but a RST (IPVS's sysctl sloppy_tcp). */
static __always_inline int schedules_tcp(const struct service_value *sv, const struct tcphdr *t)
{
	if (t->rst)
		return 0;
	return t->syn || (sv->flags & SVC_F_SLOPPY_TCP);
}

/* The real server a new flow goes to: a persistence template, else the scheduler. */
static __always_inline __s32 choose(const struct service_value *sv, struct packet *p, __u64 now)
{
	struct persist_key pk = { .svc = sv->id, .client = p->ip->saddr & sv->persist_mask };
	if (sv->flags & SVC_F_PERSISTENT) {
		struct persist_value *pv = bpf_map_lookup_elem(&persist, &pk);
		if (pv && pv->expires > now && pv->dest < sv->ndests) {
			__u32 k = slot_index(sv->id, pv->dest);
			struct dest *d = bpf_map_lookup_elem(&dests, &k);
			/* A quiesced server (weight 0) keeps its persistent clients, as IPVS. */
			if (d && (d->flags & DEST_F_PRESENT) && d->addr == pv->rip) {
				pv->expires = now + (__u64)sv->persist_timeout * NSEC_PER_SEC;
				return pv->dest;
			}
		}
	}
	__s32 slot = schedule((struct service_value *)sv, p->ip->saddr, *p->sport, p->ip->daddr, now);
	if (slot >= 0 && (sv->flags & SVC_F_PERSISTENT)) {
		__u32 k = slot_index(sv->id, slot);
		struct dest *d = bpf_map_lookup_elem(&dests, &k);
		struct persist_value pv = {
			.expires = now + (__u64)sv->persist_timeout * NSEC_PER_SEC,
			.dest = slot,
			.rip = d ? d->addr : 0,
		};
		bpf_map_update_elem(&persist, &pk, &pv, BPF_ANY);
	}
	return slot;
}

/* A new flow to a virtual service. */
static __always_inline int new_flow(struct xdp_md *ctx, struct packet *p,
				    const struct service_value *sv, struct flow_key *key, __u64 now)
{
	if (p->tcp && !schedules_tcp(sv, p->tcp)) {
		/* IPVS schedules TCP only on a SYN (any packet but a RST with sloppy_tcp). */
		count(STAT_NOT_SYN);
		return to_kernel(p);
	}
	__s32 slot = choose(sv, p, now);
	if (slot < 0) {
		count(STAT_NO_DEST);
		return to_kernel(p);
	}
	__u32 k = slot_index(sv->id, slot);
	struct dest *d = bpf_map_lookup_elem(&dests, &k);
	if (!d)
		return XDP_PASS;
	struct conn c = {
		.client = p->ip->saddr,
		.vip = p->ip->daddr,
		.rip = d->addr,
		.cport = *p->sport,
		.vport = *p->dport,
		.rport = d->port ? d->port : *p->dport,
		.proto = p->ip->protocol,
		.state = p->tcp ? TCP_S_NONE : STATE_UDP,
		.svc = sv->id,
		.dest = slot,
		.method = d->method,
		.counted = COUNTED_INACTIVE,
	};
	if (c.method != METHOD_NAT)
		c.flags |= CONN_F_NOOUTPUT;
	int ops = !p->tcp && (sv->flags & SVC_F_OPS);
	if (p->tcp) {
		int ev = tcp_event(p->tcp);
		int dir = c.method != METHOD_NAT ? DIR_INPUT_ONLY : DIR_INPUT;
		if (ev >= 0)
			c.state = tcp_next[dir][ev & 3][TCP_S_NONE];
		/* A sloppy start mid-flow (an ACK) is an established connection: IPVS's table
		 * would make it CLOSE, whose 10 s timeout loses the entry of a flow idle for
		 * longer, and with it the real server it had once the set of servers changes. */
		if (ev == 2) {
			c.state = TCP_S_ESTABLISHED;
			c.counted = COUNTED_ACTIVE;
		}
	}
	c.timeout = timeout_s(c.state);
	c.expires = now + (__u64)c.timeout * NSEC_PER_SEC;
	c.in_pkts = 1;
	if (!ops) {
		/* The same SYN (a retransmission) handled on two CPUs at once makes one entry,
		 * and the later copy is dropped. A full table refuses the connection, as IPVS
		 * does: it is not an LRU, so no live connection is pushed out uncounted. */
		long err = conn_put(key, &c, BPF_NOEXIST);
		if (err) {
			count(err == -E_EXIST ? STAT_DUP_SYN : STAT_TABLE_FULL);
			return XDP_DROP;
		}
	}
	if (c.method == METHOD_NAT) {
		/* The reply entry: the same data, flagged (one copy on the stack, which the
		 * verifier's 512-byte budget for the whole call chain keeps tight). */
		struct flow_key rk;
		reply_key(&c, &rk);
		__u32 timeout = c.timeout;
		__u64 counted = c.counted;
		c.flags |= CONN_F_REPLY;
		c.counted = COUNTED_NONE;
		if (ops)
			c.timeout = timeout_s(STATE_UDP);
		if (conn_put(&rk, &c, BPF_ANY)) {
			if (!ops)
				conn_del(key);
			count(STAT_TABLE_FULL);
			return XDP_DROP;
		}
		c.flags &= ~CONN_F_REPLY;
		c.counted = counted;
		c.timeout = timeout;
	}
	/* Counted once its entries are in the table. */
	if (!ops)
		conn_count(k, c.counted);
	count(STAT_NEW_CONN);
	account(sv->id, slot, p->len, 0, 1);
	return forward(ctx, p, &c, d, route_gen());
}

static __always_inline struct service_value *find_service(struct packet *p)
{
	struct service_key key = {};
	__builtin_memcpy(key.addr, &p->ip->daddr, 4);
	key.port = *p->dport;
	key.proto = p->ip->protocol;
	key.family = 4;
	struct service_value *sv = bpf_map_lookup_elem(&services, &key);
	if (sv)
		return sv;
	/* A port-0 service takes every port of its address (persistent only). */
	key.port = 0;
	sv = bpf_map_lookup_elem(&services, &key);
	if (sv && (sv->flags & SVC_F_PERSISTENT))
		return sv;
	return 0;
}

SEC("xdp")
int xdp_fulcrum(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct packet p = {};

	p.eth = HEADER(data, end, struct ethhdr);
	if (!p.eth) {
		count(STAT_MALFORMED);
		return XDP_PASS;
	}
	/* Whether the frame is this host's is asked before anything is done with it, and
	 * for an IPv4 TCP or UDP packet once its connection entry is known, which can say
	 * so for less (below). */
	if (p.eth->h_proto == ETH_P_IPV6_BE) {
		/* xdp_fulcrum6 asks (and counts the frame as IPv6) itself. */
		bpf_tail_call(ctx, &progs, 0);
		/* Only until the control plane has put the IPv6 entry point in place. */
		if (other_host(ctx, p.eth))
			return XDP_PASS;
		count(STAT_IPV6);
		return ipv6_to_kernel(p.eth + 1, end);
	}
	if (p.eth->h_proto != ETH_P_IP_BE)
		return pass_as(ctx, p.eth, STAT_NOT_IP);
	p.ip = HEADER(p.eth + 1, end, struct iphdr);
	if (!p.ip || p.ip->ihl < 5)
		return pass_as(ctx, p.eth, STAT_MALFORMED);
	if (p.ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return pass_as(ctx, p.eth, STAT_FRAGMENT);
	if (p.ip->ihl != 5)
		return pass_as(ctx, p.eth, STAT_IP_OPTIONS);
	p.len = bpf_ntohs(p.ip->tot_len);
	if (p.ip->protocol == IPPROTO_TCP) {
		p.tcp = HEADER(p.ip + 1, end, struct tcphdr);
		if (!p.tcp)
			return pass_as(ctx, p.eth, STAT_MALFORMED);
		p.sport = &p.tcp->source;
		p.dport = &p.tcp->dest;
		p.l4_csum = &p.tcp->check;
	} else if (p.ip->protocol == IPPROTO_UDP) {
		p.udp = HEADER(p.ip + 1, end, struct udphdr);
		if (!p.udp)
			return pass_as(ctx, p.eth, STAT_MALFORMED);
		p.sport = &p.udp->source;
		p.dport = &p.udp->dest;
		p.l4_csum = &p.udp->check;
	} else if (p.ip->protocol == IPPROTO_ICMP) {
		if (other_host(ctx, p.eth))
			return XDP_PASS;
		int verdict = icmp_error(ctx, &p, end);
		if (verdict >= 0)
			return verdict;
		verdict = tun_icmp(ctx);
		if (verdict >= 0)
			return verdict;
		count(STAT_OTHER_L4);
		/* Pointers into the frame are checked again: a global function was called. */
		data = (void *)(long)ctx->data;
		end = (void *)(long)ctx->data_end;
		struct iphdr *ip = HEADER(data + sizeof(struct ethhdr), end, struct iphdr);
		if (ip && refused(ip->daddr)) {
			count(STAT_NO_ACCEPT);
			return XDP_DROP;
		}
		return XDP_PASS;
	} else {
		if (other_host(ctx, p.eth))
			return XDP_PASS;
		count(STAT_OTHER_L4);
		return to_kernel(&p);
	}

	/* A clock to the tick is plenty for timeouts in seconds (see clock_now). */
	__u64 now = clock_now();
	struct flow_key key = {
		.src = p.ip->saddr,
		.dst = p.ip->daddr,
		.sport = *p.sport,
		.dport = *p.dport,
		.proto = p.ip->protocol,
	};
	/* The ports as one load: TCP's and UDP's headers start with them. */
	__u64 w0 = (__u64)p.ip->saddr | (__u64)p.ip->daddr << 32;
	__u64 w1 = (__u64)*(__u32 *)p.sport | (__u64)p.ip->protocol << 32;
	struct conn *c = conn_get_words(&key, w0, w1);
	/* The route generation, which an entry's cached next hop is checked against. */
	__u32 gen = c ? route_gen() : 0;
	if (other_host_but(ctx, p.eth, c, gen))
		return XDP_PASS;
	if (c && c->expires <= now) {
		if (!(c->flags & CONN_F_REPLY))
			conn_release(&key, c);
		c = 0;
	}
	if (c && (c->flags & CONN_F_REPLY))
		return reply(ctx, &p, c, now, gen);
	/* A next hop the entry keeps (DR's real server, NAT's route) while no real server,
	 * route or neighbour changed since it was taken (the control plane moves the
	 * generation) also says the real server is still there: such a packet needs no
	 * look at its slot. Not TUN, whose tunnel is the slot's; not a SYN, which may start
	 * the flow anew. */
	int kept = c && c->method != METHOD_TUN && c->ifindex && c->route_gen == gen &&
		   !(p.tcp && p.tcp->syn);
	if (kept && c->method == METHOD_DR) {
		/* DR's whole path, as short as it can be: most of a DR director's packets. */
		conn_touch(c, p.tcp, DIR_INPUT_ONLY, now);
		c->in_pkts++;
		account(c->svc, c->dest, p.len, 0, 0);
		if (p.ip->ttl <= 1)
			return ttl_exceeded(ctx);
		ttl_move(p.ip, -1);
		count(STAT_DR);
		return route_out(ctx, p.eth, c);
	}
	struct dest *d = 0;
	if (c && !kept) {
		__u32 k = slot_index(c->svc, c->dest);
		d = bpf_map_lookup_elem(&dests, &k);
		if (!d || !(d->flags & DEST_F_PRESENT) || d->addr != c->rip) {
			/* expire_nodest_conn = 1: the server was deleted. */
			conn_release(&key, c);
			count(STAT_DEST_GONE);
			return XDP_DROP;
		}
		/* IPVS's conn_reuse_mode 1: a new connection (a SYN) on the ports of one that
		 * is over (TIME_WAIT, CLOSE), or of one on a quiesced server, is scheduled
		 * anew; the old connection goes. A client reusing its ports soon after (TCP
		 * timestamps, tcp_tw_reuse) would otherwise stay on the old server. */
		if (p.tcp && p.tcp->syn && !p.tcp->ack && !p.tcp->fin && !p.tcp->rst &&
		    (c->state == TCP_S_TIME_WAIT || c->state == TCP_S_CLOSE || !d->weight)) {
			conn_release(&key, c);
			c = 0;
		}
	}
	if (c && (d || kept)) {
		__u8 before = c->state;
		conn_touch(c, p.tcp, c->method != METHOD_NAT ? DIR_INPUT_ONLY : DIR_INPUT, now);
		c->in_pkts++;
		if (c->state != before)
			reply_follow(c);
		account(c->svc, c->dest, p.len, 0, 0);
		return forward(ctx, &p, c, d, gen);
	}
	struct service_value *sv = find_service(&p);
	if (!sv) {
		count(STAT_NO_SERVICE);
		return to_kernel(&p);
	}
	count(STAT_SERVICE);
	return new_flow(ctx, &p, sv, &key, now);
}

/* IPv6, NAT and DR (xdp_fulcrum6). The same tables of services, real-server slots,
 * counts, traffic and scheduler state as IPv4; connections in the IPv6 connection table
 * (conntab.h); a slot's IPv6 address in dests6 (its `addr` holds it folded). */

/* A parsed IPv6 TCP or UDP packet (no extension headers). */
struct packet6 {
	struct ethhdr *eth;
	struct ipv6hdr *ip;
	struct tcphdr *tcp; /* NULL for UDP */
	__be16 *sport;
	__be16 *dport;
	__u16 *l4_csum;
	__u32 len; /* the IPv6 header and its payload */
};

/* An IPv6 address folded to 32 bits, as IPVS folds it for its hashes (sh, dh, lblc). */
static __always_inline __be32 fold6(const __u8 *a)
{
	const __be32 *w = (const __be32 *)a;
	return w[0] ^ w[1] ^ w[2] ^ w[3];
}

/* route_lookup for IPv6: the next hop towards `dst`, cached in `c`. */
static __always_inline int route_lookup6(struct xdp_md *ctx, struct conn *c, __u32 gen,
					 const __u8 *src, const __u8 *dst, __u8 proto)
{
	if (c->ifindex && c->route_gen == gen)
		return 0;
	struct bpf_fib_lookup f;
	fib_params6(ctx, &f, src, dst, proto, 0);
	if (bpf_fib_lookup(ctx, &f, sizeof(f), 0) != BPF_FIB_LKUP_RET_SUCCESS)
		return -1;
	c->ifindex = f.ifindex;
	__builtin_memcpy(c->dmac, f.dmac, ETH_ALEN);
	__builtin_memcpy(c->smac, f.smac, ETH_ALEN);
	/* The route's MTU, as route_lookup learns it: told only to a length over it. */
	c->mtu = 0;
	fib_params6(ctx, &f, src, dst, proto, 0xffff);
	if (bpf_fib_lookup(ctx, &f, sizeof(f), 0) == BPF_FIB_LKUP_RET_FRAG_NEEDED)
		c->mtu = f.mtu_result;
	c->route_gen = gen;
	return 0;
}

/* mtu_over for IPv6. */
static __always_inline __u32 mtu_over6(struct xdp_md *ctx, const __u8 *src, const __u8 *dst,
				       __u8 proto, __u16 len)
{
	struct bpf_fib_lookup f;
	fib_params6(ctx, &f, src, dst, proto, len);
	if (bpf_fib_lookup(ctx, &f, sizeof(f), 0) == BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return f.mtu_result;
	return 0;
}

/* The most of a packet an ICMPv6 error carries: the error may not exceed the minimum
 * IPv6 MTU (RFC 4443 2.4 (c)). */
#define ICMP6_ERR_MAX (1280 - sizeof(struct ipv6hdr) - 8)

/* Answers the IPv6 frame in `ctx` (untranslated) with an ICMPv6 error of `type` and
 * `code` carrying `info` ("packet too big"'s MTU, else 0), from its destination to its
 * source, with as much of the packet as fits in 1280 bytes, as the kernel's icmpv6_send
 * does: the frame becomes the error and goes back out (XDP_TX). A global function, as
 * icmp_answer. */
__attribute__((noinline)) int icmp6_answer(struct xdp_md *ctx, __u32 type, __u32 code,
					   __u32 info)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = HEADER(data, end, struct ethhdr);
	if (!eth)
		return XDP_DROP;
	struct ipv6hdr *ip = HEADER(eth + 1, end, struct ipv6hdr);
	if (!ip)
		return XDP_DROP;
	__u8 from[16], to[16];
	__builtin_memcpy(from, ip->daddr.in6_u.u6_addr8, 16);
	__builtin_memcpy(to, ip->saddr.in6_u.u6_addr8, 16);
	__u8 mac[2][ETH_ALEN];
	__builtin_memcpy(mac[0], eth->h_source, ETH_ALEN);
	__builtin_memcpy(mac[1], eth->h_dest, ETH_ALEN);
	__u32 len = (__u32)((long)end - (long)(eth + 1));
	__u32 kept = len < ICMP6_ERR_MAX ? len : ICMP6_ERR_MAX;
	if (reframe(ctx, sizeof(struct ipv6hdr) + 8,
		    sizeof(struct ethhdr) + sizeof(struct ipv6hdr) + 8 + kept))
		return XDP_DROP;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	eth = HEADER(data, end, struct ethhdr);
	if (!eth)
		return XDP_DROP;
	ip = HEADER(eth + 1, end, struct ipv6hdr);
	if (!ip)
		return XDP_DROP;
	__u32 *icmp = (__u32 *)HEADER(ip + 1, end, __u64);
	if (!icmp)
		return XDP_DROP;
	__builtin_memcpy(eth->h_dest, mac[0], ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac[1], ETH_ALEN);
	eth->h_proto = bpf_htons(ETH_P_IPV6);
	*(__be32 *)ip = bpf_htonl(0x60000000);
	ip->payload_len = bpf_htons(8 + kept);
	ip->nexthdr = IPPROTO_ICMPV6;
	ip->hop_limit = 64;
	__builtin_memcpy(ip->saddr.in6_u.u6_addr8, from, 16);
	__builtin_memcpy(ip->daddr.in6_u.u6_addr8, to, 16);
	icmp[0] = bpf_htonl((type & 0xff) << 24 | (code & 0xff) << 16); /* checksum 0 for now */
	icmp[1] = bpf_htonl(info);
	/* The checksum: the pseudo-header, the ICMPv6 header, the packet kept. */
	__u64 sum = 0;
	const __u32 *a = (const __u32 *)from;
	const __u32 *b = (const __u32 *)to;
#pragma unroll
	for (int i = 0; i < 4; i++)
		sum += (__u64)a[i] + b[i];
	sum += (__u64)bpf_htonl(8 + kept) + bpf_htonl(IPPROTO_ICMPV6);
	sum += (__u64)icmp[0] + icmp[1];
	struct sum_walk w = {
		.ctx = ctx,
		.off = sizeof(struct ethhdr) + sizeof(struct ipv6hdr) + 8,
		.left = kept,
	};
	bpf_loop(ICMP6_ERR_MAX / 64 + 64, sum_cb, &w, 0);
	if (w.left)
		return XDP_DROP;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	__u16 *csum = (__u16 *)HEADER(data + sizeof(struct ethhdr) + sizeof(struct ipv6hdr) + 2,
				       end, __u16);
	if (!csum)
		return XDP_DROP;
	*csum = (__u16)~csum_fold64(sum + w.sum);
	return XDP_TX;
}

/* rewrite for IPv6: no header checksum; the L4 checksum (never absent over IPv6) covers
 * the addresses through the pseudo-header. */
static __always_inline void rewrite6(struct packet6 *p, __u8 *addr, __be16 *port, const __u8 *to,
				     __be16 to_port)
{
	csum_replace18(p->l4_csum, addr, *port, to, to_port);
	if (!p->tcp && !*p->l4_csum)
		*p->l4_csum = 0xffff;
	__builtin_memcpy(addr, to, 16);
	*port = to_port;
}

/* tun_checksum for an IPv6 outer header (around an IPv6 packet, `inner_v6`, or an IPv4
 * one): gue's UDP checksum over the outer IPv6 pseudo-header, or gre's. A global
 * function, as tun_checksum. */
__attribute__((noinline)) int tun_checksum6(struct xdp_md *ctx, __u32 type, __u32 inner_v6)
{
	__u32 off = sizeof(struct ethhdr) + sizeof(struct ipv6hdr) + (type == TUN_GUE ? 12 : 8);
	__s64 sum = inner_v6 ? inner_sum6(ctx, off) : inner_sum(ctx, off);
	if (sum < 0)
		return -1;
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ipv6hdr *o = HEADER(data + sizeof(struct ethhdr), end, struct ipv6hdr);
	if (!o)
		return -1;
	__u16 *h = (__u16 *)HEADER(o + 1, end, __u64);
	if (!h)
		return -1;
	const __u32 *a = (const __u32 *)&o->saddr;
	__u64 addrs = 0;
#pragma unroll
	for (int i = 0; i < 8; i++)
		addrs += (__u64)(a[i] & 0xffff) + (a[i] >> 16);
	return put_tunnel_checksum(h, end, type, sum, addrs);
}

/* Whether an IPv6 address is an IPv4-mapped one (::ffff:a.b.c.d): how an IPv6 service
 * holds an IPv4 real server, which TUN reaches in IPv4 (tun_encap). */
static __always_inline int v4_mapped(const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;
	return w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0xffff);
}

/* TUN, as IPVS's ip_vs_tunnel_xmit and ip_vs_tunnel_xmit_v6: the client's packet (its TTL
 * or hop limit one less already) inside an outer header of the real server's family, from
 * the director's address towards the server: IPv4 (ipip: protocol 4 around IPv4, 41
 * around IPv6) or IPv6 (next header 4 or 41), then a UDP and GUE header to the server's
 * port (gue) or a GRE header (gre), each naming the inner packet's family. The outer
 * header takes the inner TOS or traffic class (a CE mark as ECT(0), INET_ECN_encapsulate)
 * and TTL or hop limit; an IPv4 one the inner DF (none around IPv6); an IPv6 one no flow
 * label. gue with csum or remcsum gets a UDP checksum (IPVS adds the remote checksum option
 * only to a packet of its own host whose checksum is left to the device, never to one it
 * forwards), gre with csum the C bit and a GRE checksum. The server's address is the
 * slot's (IPv6: dests6, an IPv6 service's IPv4 server IPv4-mapped there), the outer
 * source the director's towards it (IPv6: tun_src6).
 *
 * Too big for the route once encapsulated, as ensure_mtu_is_adequate: what is left of the
 * MTU, negated, for the caller to answer the client with ("fragmentation needed" with DF,
 * "packet too big"); dropped and counted when IPVS would fragment the outer packet (no
 * DF: XDP cannot) or under 68 (IPv4) or 1280 (IPv6) left. A global function, verified
 * once for both programs' callers; it parses the frame itself. */
__attribute__((noinline)) int tun_encap(struct xdp_md *ctx, struct conn *c, const struct dest *d,
					__u32 inner_v6)
{
	if (!c || !d)
		return XDP_DROP;
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = HEADER(data, end, struct ethhdr);
	if (!eth)
		return XDP_DROP;
	__u32 k = slot_index(c->svc, c->dest);
	struct in6_addr *rip6 = bpf_map_lookup_elem(&dests6, &k);
	struct in6_addr *src6 = bpf_map_lookup_elem(&tun_src6, &k);
	int outer_v6 = inner_v6 ? (rip6 && !v4_mapped(rip6->in6_u.u6_addr8))
				: (d->flags & DEST_F_V6) != 0;
	__u8 type = d->tun_type;
	int csum = (d->tun_flags & (TUN_F_CSUM | TUN_F_REMCSUM)) != 0;
	int extra = type == TUN_GUE ? 8 + 4 : type == TUN_GRE ? (csum ? 8 : 4) : 0;
	__u8 proto = type == TUN_GUE   ? IPPROTO_UDP
		     : type == TUN_GRE ? IPPROTO_GRE
		     : inner_v6	       ? IPPROTO_IPV6
				       : IPPROTO_IPIP;
	/* The inner packet: its length, TOS, TTL, DF, and what GUE's source port comes from
	 * (the client's address and port, spreading flows over the server's receive queues
	 * as udp_flow_src_port does). */
	__u32 inner;
	__u8 tos, ttl;
	__be16 df = 0;
	__be32 client;
	struct l4ports *ports;
	if (inner_v6) {
		struct ipv6hdr *ip = HEADER(eth + 1, end, struct ipv6hdr);
		if (!ip)
			return XDP_DROP;
		ports = HEADER(ip + 1, end, struct l4ports);
		inner = sizeof(struct ipv6hdr) + bpf_ntohs(ip->payload_len);
		tos = (bpf_ntohl(*(__be32 *)ip) >> 20) & 0xff;
		ttl = ip->hop_limit;
		client = fold6(ip->saddr.in6_u.u6_addr8);
	} else {
		struct iphdr *ip = HEADER(eth + 1, end, struct iphdr);
		if (!ip)
			return XDP_DROP;
		ports = HEADER(ip + 1, end, struct l4ports);
		inner = bpf_ntohs(ip->tot_len);
		tos = ip->tos;
		ttl = ip->ttl;
		df = ip->frag_off & bpf_htons(IP_DF);
		client = ip->saddr;
	}
	if (!ports)
		return XDP_DROP;
	__u16 sport = 32768 + ((bpf_ntohl(client) ^ bpf_ntohs(ports->source)) & 0x7fff);
	if ((tos & 3) == 3)
		tos = (tos & ~3) | 2;
	__u32 gen = route_gen();
	int unrouted;
	if (outer_v6)
		unrouted = !rip6 || !src6 ||
			   route_lookup6(ctx, c, gen, src6->in6_u.u6_addr8, rip6->in6_u.u6_addr8,
					 proto);
	else
		unrouted = route_lookup(ctx, c, gen, d->tun_saddr, d->addr, tos, proto, 0, 1);
	if (unrouted) {
		count(STAT_TUN_FAIL);
		return XDP_DROP;
	}
	__u32 outer = outer_v6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr);
	__u32 mtu = c->mtu;
	if (mtu && inner + outer + extra > mtu) {
		mtu -= outer + extra;
		if (inner_v6 ? mtu < 1280 : (!df || mtu < 68)) {
			count(STAT_TUN_TOO_BIG);
			return XDP_DROP;
		}
		return -(int)mtu;
	}
	__be16 gue_port = d->tun_port;
	__be32 saddr = d->tun_saddr, daddr = d->addr;
	if (bpf_xdp_adjust_head(ctx, -(int)(outer + extra))) {
		count(STAT_TUN_FAIL);
		return XDP_DROP;
	}
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	eth = HEADER(data, end, struct ethhdr);
	if (!eth)
		return XDP_DROP;
	if (outer_v6) {
		struct ipv6hdr *o = HEADER(eth + 1, end, struct ipv6hdr);
		if (!o || !rip6 || !src6)
			return XDP_DROP;
		eth->h_proto = ETH_P_IPV6_BE;
		*(__be32 *)o = bpf_htonl(0x60000000 | ((__u32)tos << 20));
		o->payload_len = bpf_htons(inner + extra);
		o->nexthdr = proto;
		o->hop_limit = ttl;
		__builtin_memcpy(o->saddr.in6_u.u6_addr8, src6->in6_u.u6_addr8, 16);
		__builtin_memcpy(o->daddr.in6_u.u6_addr8, rip6->in6_u.u6_addr8, 16);
	} else {
		struct iphdr *o = HEADER(eth + 1, end, struct iphdr);
		if (!o)
			return XDP_DROP;
		eth->h_proto = ETH_P_IP_BE;
		o->version = 4;
		o->ihl = 5;
		o->tos = tos;
		o->tot_len = bpf_htons(inner + outer + extra);
		o->id = 0;
		o->frag_off = df;
		o->ttl = ttl;
		o->protocol = proto;
		o->check = 0;
		o->saddr = saddr;
		o->daddr = daddr;
		o->check = ipv4_header_csum(o);
	}
	if (tunnel_header((void *)(eth + 1) + (outer & 0x3f), end, type, csum, sport, gue_port,
			  inner, inner_v6))
		return XDP_DROP;
	if (csum && type != TUN_IPIP &&
	    (outer_v6 ? tun_checksum6(ctx, type, inner_v6) : tun_checksum(ctx, type, inner_v6))) {
		count(STAT_MALFORMED);
		return XDP_DROP;
	}
	count(STAT_TUN);
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	eth = HEADER(data, end, struct ethhdr);
	if (!eth)
		return XDP_DROP;
	return route_out(ctx, eth, c);
}

/* Client -> real server `d` of an IPv6 connection. */
static __always_inline int forward6(struct xdp_md *ctx, struct packet6 *p, struct conn6 *c,
				    const struct dest *d, __u32 gen)
{
	if (p->ip->hop_limit <= 1) {
		/* IPVS's decrement_ttl: "time exceeded" from the VIP. */
		count(STAT_TTL_EXCEEDED);
		return icmp6_answer(ctx, 3, 0, 0);
	}
	p->ip->hop_limit--;
	if (c->c.method == METHOD_TUN) {
		if (!d)
			return XDP_DROP;
		int verdict = tun_encap(ctx, &c->c, d, 1);
		if (verdict >= 0)
			return verdict;
		verdict = icmp6_answer(ctx, 2, 0, -verdict);
		if (verdict == XDP_TX)
			count(STAT_TUN_FRAG_NEEDED);
		return verdict;
	}
	if (c->c.method == METHOD_DR) {
		/* As IPv4's: the real server's next hop, kept in the entry. */
		if (d) {
			if (!(d->mac[0] | d->mac[1] | d->mac[2] | d->mac[3] | d->mac[4] |
			      d->mac[5])) {
				count(STAT_NO_NEIGH);
				return XDP_DROP;
			}
			__builtin_memcpy(c->c.dmac, d->mac, ETH_ALEN);
			__builtin_memcpy(c->c.smac, d->smac, ETH_ALEN);
			c->c.ifindex = d->ifindex ? d->ifindex : ctx->ingress_ifindex;
			c->c.route_gen = gen;
		}
		count(STAT_DR);
		return route_out(ctx, p->eth, &c->c);
	}
	/* The route and its MTU first: IPv6 is never fragmented on the way, so a packet too
	 * big for the route gets "packet too big" from the VIP, untranslated, as IPVS's
	 * ip_vs_nat_xmit_v6 answers it. */
	int routed =
		!route_lookup6(ctx, &c->c, gen, p->ip->saddr.in6_u.u6_addr8, c->rip, p->ip->nexthdr);
	__u32 mtu = routed ? c->c.mtu
			   : mtu_over6(ctx, p->ip->saddr.in6_u.u6_addr8, c->rip, p->ip->nexthdr,
				       p->len);
	if (mtu >= 1280 && p->len > mtu) {
		count(STAT_NAT_TOO_BIG);
		int verdict = icmp6_answer(ctx, 2, 0, mtu);
		if (verdict == XDP_TX)
			count(STAT_NAT_FRAG_NEEDED);
		return verdict;
	}
	rewrite6(p, p->ip->daddr.in6_u.u6_addr8, p->dport, c->rip, c->c.rport);
	if (!routed) {
		p->ip->hop_limit++; /* the kernel forwards it and takes its own off */
		count(STAT_FIB_PASS);
		return XDP_PASS;
	}
	count(STAT_NAT_IN);
	return route_out(ctx, p->eth, &c->c);
}

/* Real server -> client of an IPv6 NAT connection: the source becomes the VIP again. */
static __always_inline int reply6(struct xdp_md *ctx, struct packet6 *p, struct conn6 *r, __u64 now,
				  __u32 gen)
{
	if (p->ip->hop_limit <= 1) {
		/* The kernel's forwarding answers it, as for the IPv4 reply. */
		count(STAT_TTL_EXCEEDED);
		return XDP_PASS;
	}
	if (p->tcp && r->c.state == TCP_S_ESTABLISHED && !p->tcp->syn && !p->tcp->fin &&
	    !p->tcp->rst) {
		r->c.expires = now + (__u64)r->c.timeout * NSEC_PER_SEC;
	} else {
		struct flow_key6 ck;
		client_key6(r, &ck);
		struct conn6 *c = conn_get6(&ck);
		if (c) {
			conn_touch(&c->c, p->tcp, DIR_OUTPUT, now);
			r->c.expires = c->c.expires;
			r->c.state = c->c.state;
			r->c.timeout = c->c.timeout;
		} else {
			r->c.expires = now + (__u64)r->c.timeout * NSEC_PER_SEC;
		}
	}
	account(r->c.svc, r->c.dest, p->len, 1, 0);
	int routed = !route_lookup6(ctx, &r->c, gen, r->vip, r->client, p->ip->nexthdr);
	__u32 mtu = routed ? r->c.mtu : mtu_over6(ctx, r->vip, r->client, p->ip->nexthdr, p->len);
	if (mtu && p->len > mtu) {
		/* Untranslated to the kernel, whose forwarding answers the real server. */
		count(STAT_NAT_TOO_BIG);
		return XDP_PASS;
	}
	rewrite6(p, p->ip->saddr.in6_u.u6_addr8, p->sport, r->vip, r->c.vport);
	if (!routed) {
		count(STAT_FIB_PASS);
		return XDP_PASS;
	}
	p->ip->hop_limit--;
	count(STAT_NAT_OUT);
	return route_out(ctx, p->eth, &r->c);
}

/* The client's network for an IPv6 persistence template: the address with the bits past
 * `plen` cleared (ipv6_addr_prefix, as IPVS's ip_vs_sched_persist groups IPv6 clients). */
static __always_inline void prefix6(struct persist_key6 *k, const __u8 *addr, __u32 plen)
{
	__builtin_memcpy(k->client, addr, 16);
#pragma unroll
	for (int i = 0; i < 4; i++) {
		__u32 bits = plen > 32 * i ? plen - 32 * i : 0;
		__u32 mask = bits >= 32 ? 0xffffffff : bits == 0 ? 0 : ~(0xffffffffu >> bits);
		__u32 *w = (__u32 *)&k->client[4 * i];
		*w &= bpf_htonl(mask);
	}
}

/* The real server for a new IPv6 flow: a persistence template (by the client's prefix),
 * else the scheduler on the folded addresses, as IPVS's schedulers hash IPv6 ones. */
static __always_inline __s32 choose6(const struct service_value *sv, struct packet6 *p, __u64 now)
{
	__be32 client = fold6(p->ip->saddr.in6_u.u6_addr8);
	struct persist_key6 pk = { .svc = sv->id };
	if (sv->flags & SVC_F_PERSISTENT) {
		prefix6(&pk, p->ip->saddr.in6_u.u6_addr8, (__u32)sv->persist_mask);
		struct persist_value *pv = bpf_map_lookup_elem(&persist6, &pk);
		if (pv && pv->expires > now && pv->dest < sv->ndests) {
			__u32 k = slot_index(sv->id, pv->dest);
			struct dest *d = bpf_map_lookup_elem(&dests, &k);
			if (d && (d->flags & DEST_F_PRESENT) && d->addr == pv->rip) {
				pv->expires = now + (__u64)sv->persist_timeout * NSEC_PER_SEC;
				return pv->dest;
			}
		}
	}
	__s32 slot = schedule((struct service_value *)sv, client, *p->sport,
			      fold6(p->ip->daddr.in6_u.u6_addr8), now);
	if (slot >= 0 && (sv->flags & SVC_F_PERSISTENT)) {
		__u32 k = slot_index(sv->id, slot);
		struct dest *d = bpf_map_lookup_elem(&dests, &k);
		struct persist_value pv = {
			.expires = now + (__u64)sv->persist_timeout * NSEC_PER_SEC,
			.dest = slot,
			.rip = d ? d->addr : 0,
		};
		bpf_map_update_elem(&persist6, &pk, &pv, BPF_ANY);
	}
	return slot;
}

/* Hands an IPv6 packet no service takes to the kernel (see ipv6_to_kernel). */
static __always_inline int to_kernel6(struct packet6 *p, void *end)
{
	return ipv6_to_kernel(p->ip, end);
}

/* A new IPv6 flow to a virtual service, as new_flow. */
static __always_inline int new_flow6(struct xdp_md *ctx, struct packet6 *p, void *end,
				     const struct service_value *sv, struct flow_key6 *key,
				     __u64 now)
{
	if (p->tcp && !schedules_tcp(sv, p->tcp)) {
		count(STAT_NOT_SYN);
		return to_kernel6(p, end);
	}
	__s32 slot = choose6(sv, p, now);
	if (slot < 0) {
		count(STAT_NO_DEST);
		return to_kernel6(p, end);
	}
	__u32 k = slot_index(sv->id, slot);
	struct dest *d = bpf_map_lookup_elem(&dests, &k);
	struct in6_addr *rip = bpf_map_lookup_elem(&dests6, &k);
	if (!d || !rip)
		return XDP_PASS;
	__u32 zero = 0;
	struct conn6 *c = bpf_map_lookup_elem(&scratch_conn6, &zero);
	if (!c)
		return XDP_PASS;
	__builtin_memset(c, 0, sizeof(*c));
	c->c.client = fold6(p->ip->saddr.in6_u.u6_addr8);
	c->c.vip = fold6(p->ip->daddr.in6_u.u6_addr8);
	c->c.rip = d->addr;
	c->c.cport = *p->sport;
	c->c.vport = *p->dport;
	c->c.rport = d->port ? d->port : *p->dport;
	c->c.proto = p->ip->nexthdr;
	c->c.state = p->tcp ? TCP_S_NONE : STATE_UDP;
	c->c.svc = sv->id;
	c->c.dest = slot;
	c->c.method = d->method;
	c->c.counted = COUNTED_INACTIVE;
	__builtin_memcpy(c->client, p->ip->saddr.in6_u.u6_addr8, 16);
	__builtin_memcpy(c->vip, p->ip->daddr.in6_u.u6_addr8, 16);
	__builtin_memcpy(c->rip, rip, 16);
	if (c->c.method != METHOD_NAT)
		c->c.flags |= CONN_F_NOOUTPUT;
	int ops = !p->tcp && (sv->flags & SVC_F_OPS);
	if (p->tcp) {
		int ev = tcp_event(p->tcp);
		int dir = c->c.method != METHOD_NAT ? DIR_INPUT_ONLY : DIR_INPUT;
		if (ev >= 0)
			c->c.state = tcp_next[dir][ev & 3][TCP_S_NONE];
		if (ev == 2) {
			c->c.state = TCP_S_ESTABLISHED;
			c->c.counted = COUNTED_ACTIVE;
		}
	}
	c->c.timeout = timeout_s(c->c.state);
	c->c.expires = now + (__u64)c->c.timeout * NSEC_PER_SEC;
	c->c.in_pkts = 1;
	if (!ops) {
		long err = conn_put6(key, c, BPF_NOEXIST);
		if (err) {
			count(err == -E_EXIST ? STAT_DUP_SYN : STAT_TABLE_FULL);
			return XDP_DROP;
		}
	}
	if (c->c.method == METHOD_NAT) {
		struct flow_key6 rk;
		reply_key6(c, &rk);
		__u32 timeout = c->c.timeout;
		__u64 counted = c->c.counted;
		c->c.flags |= CONN_F_REPLY;
		c->c.counted = COUNTED_NONE;
		if (ops)
			c->c.timeout = timeout_s(STATE_UDP);
		if (conn_put6(&rk, c, BPF_ANY)) {
			if (!ops)
				conn_del6(key);
			count(STAT_TABLE_FULL);
			return XDP_DROP;
		}
		c->c.flags &= ~CONN_F_REPLY;
		c->c.counted = counted;
		c->c.timeout = timeout;
	}
	if (!ops)
		conn_count(k, c->c.counted);
	count(STAT_NEW_CONN);
	account(sv->id, slot, p->len, 0, 1);
	return forward6(ctx, p, c, d, route_gen());
}

static __always_inline struct service_value *find_service6(struct packet6 *p)
{
	struct service_key key = {};
	__builtin_memcpy(key.addr, p->ip->daddr.in6_u.u6_addr8, 16);
	key.port = *p->dport;
	key.proto = p->ip->nexthdr;
	key.family = 6;
	struct service_value *sv = bpf_map_lookup_elem(&services, &key);
	if (sv)
		return sv;
	key.port = 0;
	sv = bpf_map_lookup_elem(&services, &key);
	if (sv && (sv->flags & SVC_F_PERSISTENT))
		return sv;
	return 0;
}

/* An ICMPv6 error (destination unreachable, packet too big, time exceeded, parameter
 * problem) about an IPv6 NAT connection, translated as icmp_error does for IPv4 (IPVS's
 * ip_vs_nat_icmp_v6): about a packet sent to the real server (inner client -> RIP), it
 * reaches the client as if about the VIP; about a reply sent to the client (inner VIP ->
 * client), it reaches the real server. The ICMPv6 checksum covers the outer addresses
 * too (its pseudo-header). A global function: its state stays off the entry point's
 * stack. -1: not ours. */
__attribute__((noinline)) int icmp6_error(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = HEADER(data, end, struct ethhdr);
	if (!eth)
		return -1;
	struct ipv6hdr *ip = HEADER(eth + 1, end, struct ipv6hdr);
	if (!ip || ip->nexthdr != IPPROTO_ICMPV6)
		return -1;
	struct icmphdr *icmp = HEADER(ip + 1, end, struct icmphdr);
	if (!icmp || icmp->type < 1 || icmp->type > 4)
		return -1;
	struct ipv6hdr *in = HEADER(icmp + 1, end, struct ipv6hdr);
	if (!in || (in->nexthdr != IPPROTO_TCP && in->nexthdr != IPPROTO_UDP))
		return -1;
	struct l4ports *ports = HEADER(in + 1, end, struct l4ports);
	if (!ports)
		return -1;
	/* The inner packet's flow, reversed, is the key of the entry that sent it. */
	struct flow_key6 k = { .sport = ports->dest, .dport = ports->source, .proto = in->nexthdr };
	__builtin_memcpy(k.src, in->daddr.in6_u.u6_addr8, 16);
	__builtin_memcpy(k.dst, in->saddr.in6_u.u6_addr8, 16);
	struct conn6 *c = conn_get6(&k);
	if (!c || c->c.method != METHOD_NAT)
		return -1;
	if (ip->hop_limit <= 1) {
		count(STAT_TTL_EXCEEDED);
		return XDP_DROP;
	}
	__u16 *sum = &icmp->checksum;
	if (c->c.flags & CONN_F_REPLY) {
		/* About what went to the real server: the client sees it about the VIP. */
		csum_replace16(sum, in->daddr.in6_u.u6_addr8, c->vip);
		__builtin_memcpy(in->daddr.in6_u.u6_addr8, c->vip, 16);
		csum_replace2(sum, ports->dest, c->c.vport);
		ports->dest = c->c.vport;
		if (same6(ip->saddr.in6_u.u6_addr8, c->rip)) {
			/* Sent by the real server itself: it speaks as the VIP. */
			csum_replace16(sum, ip->saddr.in6_u.u6_addr8, c->vip);
			__builtin_memcpy(ip->saddr.in6_u.u6_addr8, c->vip, 16);
		}
	} else {
		/* About a reply to the client: it goes to the real server, about its address. */
		csum_replace16(sum, in->saddr.in6_u.u6_addr8, c->rip);
		__builtin_memcpy(in->saddr.in6_u.u6_addr8, c->rip, 16);
		csum_replace2(sum, ports->source, c->c.rport);
		ports->source = c->c.rport;
		csum_replace16(sum, ip->daddr.in6_u.u6_addr8, c->rip);
		__builtin_memcpy(ip->daddr.in6_u.u6_addr8, c->rip, 16);
	}
	count(STAT_ICMP_NAT);
	if (route_lookup6(ctx, &c->c, route_gen(), ip->saddr.in6_u.u6_addr8,
			  ip->daddr.in6_u.u6_addr8, IPPROTO_ICMPV6))
		return XDP_PASS;
	ip->hop_limit--;
	return route_out(ctx, eth, &c->c);
}

/* The IPv6 entry point, tail-called by xdp_fulcrum for every IPv6 frame. Extension
 * headers and fragments go to the kernel, as everything no service takes. */
SEC("xdp")
int xdp_fulcrum6(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct packet6 p = {};
	p.eth = HEADER(data, end, struct ethhdr);
	if (!p.eth)
		return XDP_PASS;
	/* Whether the frame is this host's: asked as in xdp_fulcrum, and once known it
	 * counts as IPv6. */
	p.ip = HEADER(p.eth + 1, end, struct ipv6hdr);
	if (!p.ip)
		return pass_as6(ctx, p.eth, STAT_MALFORMED);
	p.len = sizeof(struct ipv6hdr) + bpf_ntohs(p.ip->payload_len);
	if (p.ip->nexthdr == IPPROTO_TCP) {
		p.tcp = HEADER(p.ip + 1, end, struct tcphdr);
		if (!p.tcp)
			return pass_as6(ctx, p.eth, STAT_MALFORMED);
		p.sport = &p.tcp->source;
		p.dport = &p.tcp->dest;
		p.l4_csum = &p.tcp->check;
	} else if (p.ip->nexthdr == IPPROTO_UDP) {
		struct udphdr *u = HEADER(p.ip + 1, end, struct udphdr);
		if (!u)
			return pass_as6(ctx, p.eth, STAT_MALFORMED);
		p.sport = &u->source;
		p.dport = &u->dest;
		p.l4_csum = &u->check;
	} else {
		if (other_host(ctx, p.eth))
			return XDP_PASS;
		count(STAT_IPV6);
		if (p.ip->nexthdr == IPPROTO_ICMPV6) {
			int verdict = icmp6_error(ctx);
			if (verdict >= 0)
				return verdict;
		}
		count(STAT_OTHER_L4);
		/* Pointers into the frame are checked again: a global function was called. */
		data = (void *)(long)ctx->data;
		end = (void *)(long)ctx->data_end;
		struct ipv6hdr *ip = HEADER(data + sizeof(struct ethhdr), end, struct ipv6hdr);
		return ip ? ipv6_to_kernel(ip, end) : XDP_PASS;
	}
	__u64 now = clock_now();
	struct flow_key6 key;
	__u64 w0, w1;
	flow_key6_of(&key, p.ip->saddr.in6_u.u6_addr8, p.ip->daddr.in6_u.u6_addr8, p.sport,
		     p.ip->nexthdr, &w0, &w1);
	struct conn6 *c = conn_get_words6(&key, w0, w1);
	__u32 gen = c ? route_gen() : 0;
	if (other_host_but(ctx, p.eth, c ? &c->c : 0, gen))
		return XDP_PASS;
	count(STAT_IPV6);
	if (c && c->c.expires <= now) {
		if (!(c->c.flags & CONN_F_REPLY))
			conn_release6(&key, c);
		c = 0;
	}
	if (c && (c->c.flags & CONN_F_REPLY))
		return reply6(ctx, &p, c, now, gen);
	/* A next hop kept in the entry of the current generation: the real server is still
	 * there (see xdp_fulcrum). */
	int kept = c && c->c.method != METHOD_TUN && c->c.ifindex && c->c.route_gen == gen &&
		   !(p.tcp && p.tcp->syn);
	struct dest *d = 0;
	if (c && !kept) {
		__u32 k = slot_index(c->c.svc, c->c.dest);
		d = bpf_map_lookup_elem(&dests, &k);
		struct in6_addr *rip = bpf_map_lookup_elem(&dests6, &k);
		if (!d || !rip || !(d->flags & DEST_F_PRESENT) || !same6((__u8 *)rip, c->rip)) {
			conn_release6(&key, c);
			count(STAT_DEST_GONE);
			return XDP_DROP;
		}
		if (p.tcp && p.tcp->syn && !p.tcp->ack && !p.tcp->fin && !p.tcp->rst &&
		    (c->c.state == TCP_S_TIME_WAIT || c->c.state == TCP_S_CLOSE || !d->weight)) {
			conn_release6(&key, c);
			c = 0;
		}
	}
	if (c) {
		__u8 before = c->c.state;
		conn_touch(&c->c, p.tcp, c->c.method != METHOD_NAT ? DIR_INPUT_ONLY : DIR_INPUT,
			   now);
		c->c.in_pkts++;
		if (c->c.state != before)
			reply_follow6(c);
		account(c->c.svc, c->c.dest, p.len, 0, 0);
		return forward6(ctx, &p, c, d, gen);
	}
	struct service_value *sv = find_service6(&p);
	if (!sv) {
		count(STAT_NO_SERVICE);
		return ipv6_to_kernel(p.ip, end);
	}
	count(STAT_SERVICE);
	return new_flow6(ctx, &p, end, sv, &key, now);
}

/* Run by the control plane through BPF_PROG_TEST_RUN on a frame that carries a flow key
 * after 14 bytes of padding: expires that connection if its time is up, with the same
 * atomic count updates as the data path. XDP_DROP: expired (or an orphan reply entry
 * removed); XDP_PASS: still live or not there. */
SEC("xdp")
int xdp_expire(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct flow_key *fk = HEADER(data + 14, end, struct flow_key);
	if (!fk)
		return XDP_ABORTED;
	struct flow_key key = *fk;
	struct conn *c = conn_get(&key);
	if (!c)
		return XDP_PASS;
	if (c->flags & CONN_F_REPLY) {
		struct flow_key ck;
		client_key(c, &ck);
		if (c->expires <= clock_now() && !conn_get(&ck)) {
			conn_del(&key);
			return XDP_DROP;
		}
		return XDP_PASS;
	}
	if (c->expires > clock_now())
		return XDP_PASS;
	conn_release(&key, c);
	return XDP_DROP;
}

/* xdp_expire for an IPv6 connection: the frame carries a flow_key6. */
SEC("xdp")
int xdp_expire6(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct flow_key6 *fk = HEADER(data + 14, end, struct flow_key6);
	if (!fk)
		return XDP_ABORTED;
	struct flow_key6 key = *fk;
	struct conn6 *c = conn_get6(&key);
	if (!c)
		return XDP_PASS;
	if (c->c.flags & CONN_F_REPLY) {
		struct flow_key6 ck;
		client_key6(c, &ck);
		if (c->c.expires <= clock_now() && !conn_get6(&ck)) {
			conn_del6(&key);
			return XDP_DROP;
		}
		return XDP_PASS;
	}
	if (c->c.expires > clock_now())
		return XDP_PASS;
	conn_release6(&key, c);
	return XDP_DROP;
}

/* Run by the control plane through BPF_PROG_TEST_RUN with a connection a sync master
 * sent (a struct conn after 14 bytes of padding, its service and slot resolved by the
 * control plane, `expires` on clock_now()): installs it, or brings the entry there up to
 * it, moving the server's counts as the data path does (IPVS's ip_vs_proc_conn).
 * XDP_TX: installed; XDP_PASS: updated; XDP_DROP: the table is full; XDP_ABORTED: the
 * frame is too short. */
SEC("xdp")
int xdp_adopt(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct conn *in = HEADER(data + 14, end, struct conn);
	if (!in)
		return XDP_ABORTED;
	struct flow_key key;
	client_key(in, &key);
	struct conn *c = conn_get(&key);
	if (c && (c->flags & CONN_F_REPLY))
		return XDP_DROP;
	if (c && (c->rip != in->rip || c->rport != in->rport || c->svc != in->svc ||
		  c->dest != in->dest || c->method != in->method)) {
		/* Another server now: the old entry goes, with its count. */
		conn_release(&key, c);
		c = 0;
	}
	if (c) {
		conn_set_state(c, in->state);
		c->timeout = in->timeout;
		c->expires = in->expires;
		reply_follow(c);
		return XDP_PASS;
	}
	struct conn n = *in;
	n.flags = n.method != METHOD_NAT ? CONN_F_NOOUTPUT : 0;
	n.counted = n.state == TCP_S_ESTABLISHED ? COUNTED_ACTIVE : COUNTED_INACTIVE;
	n.ifindex = 0;
	n.route_gen = 0;
	long err = conn_put(&key, &n, BPF_NOEXIST);
	if (err) {
		if (err == -E_EXIST)
			return XDP_PASS;
		count(STAT_TABLE_FULL);
		return XDP_DROP;
	}
	__u64 counted = n.counted;
	if (n.method == METHOD_NAT) {
		struct flow_key rk;
		reply_key(&n, &rk);
		n.flags |= CONN_F_REPLY;
		n.counted = COUNTED_NONE;
		if (conn_put(&rk, &n, BPF_ANY)) {
			conn_del(&key);
			count(STAT_TABLE_FULL);
			return XDP_DROP;
		}
	}
	conn_count(slot_index(n.svc, n.dest), counted);
	return XDP_TX;
}

/* xdp_adopt for an IPv6 connection: the frame carries a struct conn6 (its `c` with the
 * addresses folded, as the data path keeps them). Same verdicts. */
SEC("xdp")
int xdp_adopt6(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct conn6 *in = HEADER(data + 14, end, struct conn6);
	if (!in)
		return XDP_ABORTED;
	struct flow_key6 key;
	client_key6(in, &key);
	struct conn6 *c = conn_get6(&key);
	if (c && (c->c.flags & CONN_F_REPLY))
		return XDP_DROP;
	if (c && (!same6(c->rip, in->rip) || c->c.rport != in->c.rport || c->c.svc != in->c.svc ||
		  c->c.dest != in->c.dest || c->c.method != in->c.method)) {
		conn_release6(&key, c);
		c = 0;
	}
	if (c) {
		conn_set_state(&c->c, in->c.state);
		c->c.timeout = in->c.timeout;
		c->c.expires = in->c.expires;
		reply_follow6(c);
		return XDP_PASS;
	}
	/* Made in the per-CPU scratch entry: 120 bytes would not fit beside the rest. */
	__u32 zero = 0;
	struct conn6 *n = bpf_map_lookup_elem(&scratch_conn6, &zero);
	if (!n)
		return XDP_ABORTED;
	__builtin_memcpy(n, in, sizeof(*n));
	n->c.flags = n->c.method != METHOD_NAT ? CONN_F_NOOUTPUT : 0;
	n->c.counted = n->c.state == TCP_S_ESTABLISHED ? COUNTED_ACTIVE : COUNTED_INACTIVE;
	n->c.ifindex = 0;
	n->c.route_gen = 0;
	long err = conn_put6(&key, n, BPF_NOEXIST);
	if (err) {
		if (err == -E_EXIST)
			return XDP_PASS;
		count(STAT_TABLE_FULL);
		return XDP_DROP;
	}
	__u64 counted = n->c.counted;
	if (n->c.method == METHOD_NAT) {
		struct flow_key6 rk;
		reply_key6(n, &rk);
		n->c.flags |= CONN_F_REPLY;
		n->c.counted = COUNTED_NONE;
		if (conn_put6(&rk, n, BPF_ANY)) {
			conn_del6(&key);
			count(STAT_TABLE_FULL);
			return XDP_DROP;
		}
	}
	conn_count(slot_index(n->c.svc, n->c.dest), counted);
	return XDP_TX;
}

/* Run by the control plane through BPF_PROG_TEST_RUN to set the clock: writes
 * bpf_jiffies64(), bpf_ktime_get_coarse_ns() and clock_now(), three native-endian u64s,
 * after 14 bytes of padding. XDP_ABORTED if the frame is too short. */
SEC("xdp")
int xdp_clock(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct clock_sample {
		__u64 jiffies, coarse, now;
	} *out = HEADER(data + 14, end, struct clock_sample);
	if (!out)
		return XDP_ABORTED;
	/* The coarse clock first: a tick between the two reads then leaves the clock set
	 * from them a tick behind CLOCK_MONOTONIC, never ahead. */
	out->coarse = bpf_ktime_get_coarse_ns();
	out->jiffies = bpf_jiffies64();
	out->now = clock_now();
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
