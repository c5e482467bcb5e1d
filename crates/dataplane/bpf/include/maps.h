/* The maps the control plane and the program share. */
#ifndef FULCRUM_MAPS_H
#define FULCRUM_MAPS_H

#include <linux/bpf.h>
#include <linux/in6.h>
#include <bpf/bpf_helpers.h>
#include "constants.h"
#include "structs.h"

/* Virtual services, written by the control plane. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct service_key);
	__type(value, struct service_value);
	__uint(max_entries, MAX_SERVICES);
} services SEC(".maps");

/* Real-server slots (service id * MAX_DESTS + slot), written by the control plane. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct dest);
	__uint(max_entries, MAX_SERVICES * MAX_DESTS);
} dests SEC(".maps");

/* Active and inactive connections per real-server slot, written only by the program. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct dest_conns);
	__uint(max_entries, MAX_SERVICES * MAX_DESTS);
} dest_conns SEC(".maps");

/* Traffic per service and per real-server slot, per CPU. */
/* The order the schedulers scan a service's slots in (service id * MAX_DESTS + position ->
 * slot + 1; 0: the slot at that position), written by the control plane: IPVS's list
 * order, the newest real server first (ip_vs_add_dest puts a new one at the head of the
 * service's list), holes last. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, MAX_SERVICES * MAX_DESTS);
} sched_order SEC(".maps");

/* What the real servers a service no longer has carried, kept by the control plane
 * (which adds a server's counts here as it takes the server out) so that a service's
 * counts, its servers' summed, go on counting them, as IPVS's service counters do. The
 * program counts only into dest_traffic. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct traffic);
	__uint(max_entries, MAX_SERVICES);
} svc_retired SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct traffic);
	__uint(max_entries, MAX_SERVICES * MAX_DESTS);
} dest_traffic SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct sched_state);
	__uint(max_entries, MAX_SERVICES);
} sched_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct table_key);
	__type(value, __u32);
	__uint(max_entries, MAX_TABLE_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} sched_tables SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct locality_key);
	__type(value, struct locality_value);
	__uint(max_entries, MAX_LOCALITY);
} locality SEC(".maps");

/* Room for a locality entry being made (one per CPU), off the program's stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct locality_value);
	__uint(max_entries, 1);
} scratch_locality SEC(".maps");

/* A connection table's maps (conntab.h), declared once for each family below:
 * - conn_slots: the entries, in slots the program places them in; mappable, so the
 *   control plane reads the table without a system call per entry;
 * - conn_hash: the hash's multipliers, the size and the limit (written by the control
 *   plane when it makes the table) and the counts (the program's);
 * - conn_stash: where an entry went whose window was full (flow -> slot); empty on most
 *   directors;
 * - conn_chunks: live entries per CONN_CHUNK slots (conntab.h's chunk_count); sized with
 *   the slots by the control plane, and mappable like them;
 * - conn_locks: conn_put's locks, one per home slot's low bits; pinned with the table, so
 *   a restarted daemon's program and the one it replaces share them.
 * The control plane sizes the slots, the stash and the chunks of both tables for as many
 * connections. */
#define CONN_TABLE_MAPS(SFX, KEY, SLOT, PARAMS)                                            \
	struct {                                                                           \
		__uint(type, BPF_MAP_TYPE_ARRAY);                                          \
		__type(key, __u32);                                                        \
		__type(value, SLOT);                                                       \
		__uint(max_entries, CONN_SLOTS);                                           \
		__uint(map_flags, BPF_F_MMAPABLE);                                         \
	} conn_slots##SFX SEC(".maps");                                                    \
	struct {                                                                           \
		__uint(type, BPF_MAP_TYPE_ARRAY);                                          \
		__type(key, __u32);                                                        \
		__type(value, PARAMS);                                                     \
		__uint(max_entries, 1);                                                    \
	} conn_hash##SFX SEC(".maps");                                                     \
	struct {                                                                           \
		__uint(type, BPF_MAP_TYPE_HASH);                                           \
		__type(key, KEY);                                                          \
		__type(value, __u32);                                                      \
		__uint(max_entries, CONN_SLOTS / 16);                                      \
		__uint(map_flags, BPF_F_NO_PREALLOC);                                      \
	} conn_stash##SFX SEC(".maps");                                                    \
	struct {                                                                           \
		__uint(type, BPF_MAP_TYPE_ARRAY);                                          \
		__type(key, __u32);                                                        \
		__type(value, __u64);                                                      \
		__uint(max_entries, CONN_SLOTS / CONN_CHUNK + 1);                          \
		__uint(map_flags, BPF_F_MMAPABLE);                                         \
	} conn_chunks##SFX SEC(".maps");                                                   \
	struct {                                                                           \
		__uint(type, BPF_MAP_TYPE_ARRAY);                                          \
		__type(key, __u32);                                                        \
		__type(value, __u64);                                                      \
		__uint(max_entries, CONN_LOCKS);                                           \
	} conn_locks##SFX SEC(".maps")

/* IPv4's: conn_slots, conn_hash, conn_stash, conn_chunks, conn_locks. */
CONN_TABLE_MAPS(, struct flow_key, struct conn_slot, struct conn_hash);
/* IPv6's: conn_slots6, conn_hash6, ... (152-byte slots; conn_hash6 adds the address
 * multipliers). */
CONN_TABLE_MAPS(6, struct flow_key6, struct conn_slot6, struct conn_hash6);

/* Room for the IPv6 connection entry being made (one per CPU), off the stack: on it, the
 * 120 bytes take the IPv6 program past the 512 its call chain may use. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct conn6);
	__uint(max_entries, 1);
} scratch_conn6 SEC(".maps");

/* The IPv6 address of an IPv6 real-server slot (same index as `dests`, whose `addr` then
 * holds the address folded). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct in6_addr);
	__uint(max_entries, MAX_SERVICES * MAX_DESTS);
} dests6 SEC(".maps");

/* TUN over IPv6: the outer source of an IPv6 real-server slot, the director's own address
 * towards the server (same index as `dests`; IPv4 slots keep theirs in the slot). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct in6_addr);
	__uint(max_entries, MAX_SERVICES * MAX_DESTS);
} tun_src6 SEC(".maps");

/* The IPv6 entry point (xdp_fulcrum6), tail-called for IPv6 frames: a program of its own,
 * with the whole stack to itself. */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
} progs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct persist_key);
	__type(value, struct persist_value);
	__uint(max_entries, MAX_CONNS / 4);
} persist SEC(".maps");

/* IPv6 persistence templates, by the client's prefix (the service's persist_mask holds
 * its length): allocated as they are made, and swept by the control plane. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct persist_key6);
	__type(value, struct persist_value);
	__uint(max_entries, MAX_CONNS / 4);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} persist6 SEC(".maps");

/* Timeouts in seconds by enum conn_state, written by the control plane (ipvsadm --set). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, STATE_MAX);
} timeouts SEC(".maps");

/* VIPs of VRRP instances that are master in no_accept mode: traffic to them that no
 * virtual service takes is dropped (VRRP's own adverts excepted). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __be32);
	__type(value, __u8);
	__uint(max_entries, MAX_NO_ACCEPT);
} no_accept SEC(".maps");

static __always_inline int refused(__be32 daddr)
{
	return bpf_map_lookup_elem(&no_accept, &daddr) != 0;
}

/* The same for IPv6 VIPs, keyed by the address's 16 bytes. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct in6_addr);
	__type(value, __u8);
	__uint(max_entries, MAX_NO_ACCEPT);
} no_accept6 SEC(".maps");

/* The unicast MACs an interface takes frames for (its own, and those of the devices on
 * it: a bridge or bond it is in, its VLANs and macvlans, VRRP's vmacs), at ifindex %
 * HOST_MAC_SLOTS, written by the control plane. A frame to any other unicast MAC is not
 * this host's (the kernel drops it as PACKET_OTHERHOST before IP sees it, so IPVS never
 * does): the program leaves it to the kernel. An interface not in the table (`ifindex`
 * not its own), or with `n` 0, takes every frame. */
#define HOST_MAC_SLOTS 1024
#define HOST_MACS 8
struct host_macs {
	__u32 ifindex;
	__u32 n;
	__u8 mac[HOST_MACS][8]; /* 6 bytes each, padded */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct host_macs);
	__uint(max_entries, HOST_MAC_SLOTS);
} host_macs SEC(".maps");

/* Settings written by the control plane: [0] the route generation (see struct conn). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
} settings SEC(".maps");

static __always_inline __u32 route_gen(void)
{
	__u32 k = 0;
	__u32 *g = bpf_map_lookup_elem(&settings, &k);
	return g ? *g : 0;
}

/* The data plane's clock, set by the control plane at every load (not pinned: each
 * program has its own). bpf_jiffies64() is inlined by the verifier, where
 * bpf_ktime_get_coarse_ns() is a helper call, and with the kernel's return-stack
 * mitigations a call costs as much as the rest of a DR packet's work. Jiffies advance with
 * CLOCK_MONOTONIC one tick at a time, so jiffies * tick_ns - base is CLOCK_MONOTONIC
 * rounded down to the tick: the same clock as before, and as the control plane's. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct clock);
	__uint(max_entries, 1);
} clock SEC(".maps");

/* Now, in CLOCK_MONOTONIC nanoseconds to the kernel's tick; the coarse clock (the same,
 * with a helper call) until the control plane has set the tick length. */
static __always_inline __u64 clock_now(void)
{
	__u32 k = 0;
	struct clock *c = bpf_map_lookup_elem(&clock, &k);
	if (c && c->tick_ns)
		return bpf_jiffies64() * c->tick_ns - c->base;
	return bpf_ktime_get_coarse_ns();
}

/* Packets by reason (enum stat_reason), per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, STAT_MAX);
} stats SEC(".maps");

static __always_inline void count(__u32 reason)
{
	__u64 *c = bpf_map_lookup_elem(&stats, &reason);
	if (c)
		*c += 1;
}

static __always_inline int same_mac(const __u8 *a, const __u8 *b)
{
	return *(const __u32 *)a == *(const __u32 *)b &&
	       *(const __u16 *)(a + 4) == *(const __u16 *)(b + 4);
}

/* Whether a frame to `dst` on the interface `ifindex` is this host's (see host_macs). */
static __always_inline int for_this_host(__u32 ifindex, const __u8 *dst)
{
	if (dst[0] & 1)
		return 1; /* multicast, broadcast */
	__u32 k = ifindex % HOST_MAC_SLOTS;
	struct host_macs *h = bpf_map_lookup_elem(&host_macs, &k);
	if (!h || h->ifindex != ifindex || !h->n)
		return 1;
	if (same_mac(h->mac[0], dst))
		return 1;
#pragma unroll
	for (int i = 1; i < HOST_MACS; i++)
		if (i < h->n && same_mac(h->mac[i], dst))
			return 1;
	return 0;
}

#endif
