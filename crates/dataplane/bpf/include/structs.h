/* Structs shared with the Rust side (src/lib.rs asserts the same sizes and offsets). */
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
	__u32 id;
	__u32 flags;
};
_Static_assert(sizeof(struct service_value) == 8, "service_value layout");

#endif
