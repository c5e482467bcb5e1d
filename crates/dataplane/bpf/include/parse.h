/* Header parsing with the bounds checks the verifier requires. */
#ifndef FULCRUM_PARSE_H
#define FULCRUM_PARSE_H

#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include "constants.h"

/* An ICMP header (linux/icmp.h pulls in libc's socket headers, so it is written here). */
struct icmphdr {
	__u8 type;
	__u8 code;
	__u16 checksum;
	__u32 rest;
};

/* The ports that start a TCP or UDP header. */
struct l4ports {
	__be16 source;
	__be16 dest;
};

#define ICMP_DEST_UNREACH 3
#define ICMP_FRAG_NEEDED 4 /* code of ICMP_DEST_UNREACH */
#define ICMP_SOURCE_QUENCH 4
#define ICMP_TIME_EXCEEDED 11
#define ICMP_EXC_TTL 0 /* code of ICMP_TIME_EXCEEDED */
#define ICMP_PARAMETERPROB 12
#define ND_NEIGHBOR_SOLICIT 135
#define ND_NEIGHBOR_ADVERT 136

/* A pointer to `len` bytes at `p`, or NULL when the frame ends first. */
#define HEADER(p, end, type) (((void *)(p) + sizeof(type) > (void *)(end)) ? NULL : (type *)(p))

#endif
