// SPDX-License-Identifier: GPL-2.0
/* Fulcrum's XDP data plane: entry point. Bounds checks and classification here; what each
 * verdict means is in include/constants.h. Virtual services are looked up; forwarding
 * (NAT, DR) comes with the layer-4 work, so for now every packet goes to the kernel. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "include/constants.h"
#include "include/structs.h"
#include "include/maps.h"
#include "include/parse.h"

SEC("xdp")
int xdp_fulcrum(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;

	struct ethhdr *eth = HEADER(data, end, struct ethhdr);
	if (!eth) {
		count(STAT_MALFORMED);
		return XDP_PASS;
	}
	if (eth->h_proto == ETH_P_IPV6_BE) {
		count(STAT_IPV6);
		return XDP_PASS;
	}
	if (eth->h_proto != ETH_P_IP_BE) {
		count(STAT_NOT_IP);
		return XDP_PASS;
	}
	struct iphdr *ip = HEADER(eth + 1, end, struct iphdr);
	if (!ip || ip->ihl < 5) {
		count(STAT_MALFORMED);
		return XDP_PASS;
	}
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET)) {
		count(STAT_FRAGMENT);
		return XDP_PASS;
	}
	if (ip->ihl != 5) {
		count(STAT_IP_OPTIONS);
		return XDP_PASS;
	}
	__be16 port;
	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *tcp = HEADER(ip + 1, end, struct tcphdr);
		if (!tcp) {
			count(STAT_MALFORMED);
			return XDP_PASS;
		}
		port = tcp->dest;
	} else if (ip->protocol == IPPROTO_UDP) {
		struct udphdr *udp = HEADER(ip + 1, end, struct udphdr);
		if (!udp) {
			count(STAT_MALFORMED);
			return XDP_PASS;
		}
		port = udp->dest;
	} else {
		count(STAT_OTHER_L4);
		return XDP_PASS;
	}
	struct service_key key = {};
	__builtin_memcpy(key.addr, &ip->daddr, 4);
	key.port = port;
	key.proto = ip->protocol;
	key.family = 4;
	if (bpf_map_lookup_elem(&services, &key)) {
		count(STAT_SERVICE);
		return XDP_PASS;
	}
	count(STAT_NO_SERVICE);
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
