/* Constants shared by the XDP program's headers. */
#ifndef FULCRUM_CONSTANTS_H
#define FULCRUM_CONSTANTS_H

#define ETH_P_IP_BE 0x0008   /* htons(ETH_P_IP) */
#define ETH_P_IPV6_BE 0xDD86 /* htons(ETH_P_IPV6) */
#define IP_MF 0x2000
#define IP_OFFSET 0x1FFF

#define MAX_SERVICES 65536

/* Indexes of the per-CPU counters in the `stats` map: why a packet got its verdict.
 * Mirrored by `Reason` in src/lib.rs. */
enum stat_reason {
	STAT_NOT_IP = 0,      /* not IPv4 or IPv6: ARP and friends, to the kernel */
	STAT_MALFORMED = 1,   /* truncated headers: to the kernel, which drops them */
	STAT_FRAGMENT = 2,    /* IPv4 fragments: to the kernel */
	STAT_IP_OPTIONS = 3,  /* IPv4 with options: to the kernel */
	STAT_IPV6 = 4,        /* IPv6: to the kernel (no IPv6 services yet) */
	STAT_NO_SERVICE = 5,  /* IPv4 TCP/UDP to no virtual service: to the kernel */
	STAT_SERVICE = 6,     /* matched a virtual service */
	STAT_OTHER_L4 = 7,    /* IPv4 neither TCP nor UDP: to the kernel */
	STAT_MAX = 8,
};

#endif
