// SPDX-License-Identifier: GPL-2.0
/* Fulcrum's decapsulator for TUN real servers (`fulcrum decap IFACE`), for kernels without
 * ipip, gre or fou: takes off the outer headers a director put on (ipip; gre, with or
 * without a checksum, key or sequence number; gue on the configured UDP ports, with its
 * options), over IPv4 or IPv6 and around IPv4 or IPv6, and hands the client's packet to
 * the kernel, which delivers it to the VIP the real server holds. Everything else passes
 * untouched. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "include/constants.h"
#include "include/parse.h"

/* Indexes of the per-CPU counters in decap_stats. Mirrored by `DecapCounter` in
 * src/decap.rs. */
enum decap_stat {
	DECAP_IPIP = 0,      /* ipip (IPv4 or IPv6 in IPv4 or IPv6) packets decapsulated */
	DECAP_GUE = 1,       /* gue packets decapsulated */
	DECAP_GRE = 2,       /* gre packets decapsulated */
	DECAP_MALFORMED = 3, /* tunnel packets too short or of an unknown form: passed as they are */
	DECAP_OTHER = 4,     /* not a tunnel packet: passed */
	DECAP_MAX = 5,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, DECAP_MAX);
} decap_stats SEC(".maps");

/* The UDP ports (network order) on which gue is taken off; the value is unused. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u16);
	__type(value, __u8);
	__uint(max_entries, 64);
} decap_gue_ports SEC(".maps");

static __always_inline void decap_count(__u32 what)
{
	__u64 *c = bpf_map_lookup_elem(&decap_stats, &what);
	if (c)
		*c += 1;
}

#define GRE_F_CSUM 0x8000
#define GRE_F_KEY 0x2000
#define GRE_F_SEQ 0x1000
#define GRE_F_OTHER 0x4fff /* routing, strict source route, recursion, flags, version */

/* Removes `len` bytes after the Ethernet header, which moves up over them and names the
 * inner packet's protocol (`inner`, network order). */
static __always_inline int strip(struct xdp_md *ctx, int len, __be16 inner)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = HEADER(data, end, struct ethhdr);
	if (!eth)
		return XDP_PASS;
	struct ethhdr copy = *eth;
	if (bpf_xdp_adjust_head(ctx, len))
		return XDP_PASS;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	eth = HEADER(data, end, struct ethhdr);
	if (!eth)
		return XDP_DROP;
	__builtin_memcpy(eth->h_dest, copy.h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_source, copy.h_source, ETH_ALEN);
	eth->h_proto = inner;
	return XDP_PASS;
}

/* The Ethernet type of a packet whose IP protocol number is `proto` (IPv4 in IPv4 or
 * IPv6, IPv6 in either), 0 for any other. */
static __always_inline __be16 inner_type(__u8 proto)
{
	if (proto == IPPROTO_IPIP)
		return ETH_P_IP_BE;
	if (proto == IPPROTO_IPV6)
		return ETH_P_IPV6_BE;
	return 0;
}

/* Whether the frame holds a whole inner header of type `inner` at `l3` + `len`. */
static __always_inline int fits(void *l3, int len, __be16 inner, void *end)
{
	int need = inner == ETH_P_IP_BE ? sizeof(struct iphdr) : sizeof(struct ipv6hdr);
	return l3 + (len & 0x3ff) + need <= end;
}

/* Takes off what follows an outer IP header of `len` bytes at `l3` whose protocol (or
 * next header) is `proto`. */
static __always_inline int decap(struct xdp_md *ctx, void *l3, int len, __u8 proto, void *end)
{
	__be16 inner = inner_type(proto);
	if (inner) {
		if (!fits(l3, len, inner, end)) {
			decap_count(DECAP_MALFORMED);
			return XDP_PASS;
		}
		decap_count(DECAP_IPIP);
		return strip(ctx, len, inner);
	}
	if (proto == IPPROTO_GRE) {
		__be16 *g = (__be16 *)HEADER(l3 + (len & 0x3ff), end, __u32);
		if (!g) {
			decap_count(DECAP_MALFORMED);
			return XDP_PASS;
		}
		__u16 flags = bpf_ntohs(g[0]);
		inner = g[1] == bpf_htons(ETH_P_IP) ? ETH_P_IP_BE
			: g[1] == bpf_htons(ETH_P_IPV6) ? ETH_P_IPV6_BE
							 : 0;
		if ((flags & GRE_F_OTHER) || !inner) {
			decap_count(DECAP_MALFORMED);
			return XDP_PASS;
		}
		len += 4;
		if (flags & GRE_F_CSUM)
			len += 4;
		if (flags & GRE_F_KEY)
			len += 4;
		if (flags & GRE_F_SEQ)
			len += 4;
		if (!fits(l3, len, inner, end)) {
			decap_count(DECAP_MALFORMED);
			return XDP_PASS;
		}
		decap_count(DECAP_GRE);
		return strip(ctx, len, inner);
	}
	if (proto == IPPROTO_UDP) {
		struct udphdr *u = HEADER(l3 + (len & 0x3ff), end, struct udphdr);
		if (!u || !bpf_map_lookup_elem(&decap_gue_ports, &u->dest)) {
			decap_count(DECAP_OTHER);
			return XDP_PASS;
		}
		__u8 *g = (__u8 *)HEADER(u + 1, end, __u32);
		/* GUE version 0, a data message (not control), carrying IPv4 or IPv6. */
		inner = g ? inner_type(g[1]) : 0;
		if (!g || (g[0] & 0xe0) || !inner) {
			decap_count(DECAP_MALFORMED);
			return XDP_PASS;
		}
		len += sizeof(struct udphdr) + 4 + (g[0] & 0x1f) * 4;
		if (!fits(l3, len, inner, end)) {
			decap_count(DECAP_MALFORMED);
			return XDP_PASS;
		}
		decap_count(DECAP_GUE);
		return strip(ctx, len, inner);
	}
	decap_count(DECAP_OTHER);
	return XDP_PASS;
}

SEC("xdp")
int xdp_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = HEADER(data, end, struct ethhdr);
	if (eth && eth->h_proto == ETH_P_IPV6_BE) {
		/* No extension headers: IPVS puts none on. */
		struct ipv6hdr *ip6 = HEADER(eth + 1, end, struct ipv6hdr);
		if (!ip6) {
			decap_count(DECAP_OTHER);
			return XDP_PASS;
		}
		return decap(ctx, ip6, sizeof(struct ipv6hdr), ip6->nexthdr, end);
	}
	if (!eth || eth->h_proto != ETH_P_IP_BE) {
		decap_count(DECAP_OTHER);
		return XDP_PASS;
	}
	struct iphdr *ip = HEADER(eth + 1, end, struct iphdr);
	if (!ip || ip->ihl != 5 || (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))) {
		decap_count(DECAP_OTHER);
		return XDP_PASS;
	}
	return decap(ctx, ip, sizeof(struct iphdr), ip->protocol, end);
}

char _license[] SEC("license") = "GPL";
