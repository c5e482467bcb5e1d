/* Incremental Internet checksum updates (RFC 1624): HC' = ~(~HC + ~m + m'). The values
 * are taken as they lie in the packet; one's-complement sums do not care about order. */
#ifndef FULCRUM_CSUM_H
#define FULCRUM_CSUM_H

#include <linux/types.h>
#include <bpf/bpf_endian.h>

static __always_inline __u16 csum_fold32(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

static __always_inline __u16 csum_fold64(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffffffff) + (s >> 32);
	return csum_fold32((__u32)s);
}

/* The one's-complement sum of two addresses, a protocol and a length: the pseudo-header
 * of TCP and UDP over IPv4 (RFC 768, 793), values as they lie in the packet. */
static __always_inline __u32 pseudo_sum(__be32 saddr, __be32 daddr, __u8 proto, __u16 len)
{
	return (saddr & 0xffff) + (saddr >> 16) + (daddr & 0xffff) + (daddr >> 16) +
	       bpf_htons((__u16)proto) + bpf_htons(len);
}

static __always_inline void csum_replace2(__u16 *sum, __u16 from, __u16 to)
{
	__u32 s = (__u16)~*sum;
	s += (__u16)~from;
	s += to;
	*sum = (__u16)~csum_fold32(s);
}

static __always_inline void csum_replace4(__u16 *sum, __u32 from, __u32 to)
{
	__u32 s = (__u16)~*sum;
	s += (__u16)~(from & 0xffff);
	s += (__u16)~(from >> 16);
	s += to & 0xffff;
	s += to >> 16;
	*sum = (__u16)~csum_fold32(s);
}

/* An address and a port changed at once (NAT's rewrite of TCP's or UDP's checksum): one
 * fold for the six 16-bit words. */
static __always_inline void csum_replace6(__u16 *sum, __u32 from, __u16 pfrom, __u32 to, __u16 pto)
{
	__u32 s = (__u16)~*sum;
	s += (__u16)~(from & 0xffff);
	s += (__u16)~(from >> 16);
	s += (__u16)~pfrom;
	s += to & 0xffff;
	s += to >> 16;
	s += pto;
	*sum = (__u16)~csum_fold32(s);
}

/* The one's-complement sum of ~from and to for a 16-byte field (an IPv6 address): four
 * 32-bit words each, summed in 64 bits (one's-complement sums fold the same whatever the
 * width of the words added). */
static __always_inline __u64 csum_delta16(const __u8 *from, const __u8 *to)
{
	const __u32 *f = (const __u32 *)from, *t = (const __u32 *)to;
	__u64 s = 0;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		s += (__u32)~f[i];
		s += t[i];
	}
	return s;
}

/* A 16-byte field (an IPv6 address) changed from `from` to `to`. */
static __always_inline void csum_replace16(__u16 *sum, const __u8 *from, const __u8 *to)
{
	__u64 s = (__u16)~*sum + csum_delta16(from, to);
	*sum = (__u16)~csum_fold64(s);
}

/* An IPv6 address and a port changed at once (NAT's rewrite of TCP's or UDP's checksum
 * over IPv6): one fold. */
static __always_inline void csum_replace18(__u16 *sum, const __u8 *from, __u16 pfrom,
					   const __u8 *to, __u16 pto)
{
	__u64 s = (__u16)~*sum + csum_delta16(from, to) + (__u16)~pfrom + pto;
	*sum = (__u16)~csum_fold64(s);
}

#endif
