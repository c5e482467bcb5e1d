/* The maps the control plane and the program share. */
#ifndef FULCRUM_MAPS_H
#define FULCRUM_MAPS_H

#include <linux/bpf.h>
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

#endif
