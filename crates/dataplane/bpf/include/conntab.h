/* The connection tables, IPv4's and IPv6's: arrays the program indexes itself.
 *
 * A lookup in a BPF hash map is a chain of calls in the kernel (the map's lookup, the
 * hash, the bucket walk, memcmp), and on CPUs whose return-stack mitigations make every
 * call and return dear, that chain cost more than the rest of an established packet's
 * work. An array lookup the verifier inlines into a bounds check and an address. So the
 * entries live in `conn_slots`, placed by a keyed hash of the flow computed here: in the
 * hash's home slot or one of the CONN_WINDOW - 1 after it (linear probing), as far as the
 * home slot's reach says its entries went, which spares a key that is not there the rest
 * of the window, and deletes need no tombstone. An entry whose window is full goes to the
 * first free slot after it, and `conn_stash`, a small hash map, remembers where: the
 * common case costs a hash and one slot read, and a put finds a free slot whatever the
 * flows' hashes do (a flood aimed at one window only lands in the stash). The table holds
 * at most `limit` entries, a fifth of its slots kept free so that windows stay short.
 *
 * A slot's tag holds its state in the low two bits and a generation above them, bumped
 * each time the slot is freed, so a delete that raced with another CPU reusing the slot
 * fails its compare-and-swap instead of freeing the newcomer. Entries are read and
 * written in place without a lock, as the kernel's preallocated hash maps hand out
 * elements: a reader on another CPU may see a field change under it.
 *
 * The IPv6 table is the same (`conn_slots6`, `conn_stash6`, ...; its functions are
 * IPv4's with a 6, from the one body in conntab_impl.h), with 152-byte slots. Its keys'
 * 40 bytes do not fit two words: their addresses are hashed into the first (key_words6),
 * and a lookup compares the addresses of the entry's own key as well (slot_holds6). It
 * was a hash map until the lookup's calls, on such a CPU, made its established packets
 * dearer than IPv4's by half. */
#ifndef FULCRUM_CONNTAB_H
#define FULCRUM_CONNTAB_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "constants.h"
#include "structs.h"
#include "maps.h"

#define SLOT_STATE 3ULL
#define SLOT_FREE 0ULL
#define SLOT_BUSY 1ULL /* claimed, being written */
#define SLOT_LIVE 2ULL
#define SLOT_GEN 4ULL /* one generation, above the state */
/* conn_slot.reach of a home slot: how many slots from it lookups scan (the farthest an
 * entry homed there was put, plus one; 0: none ever was), and whether one went to the
 * stash. */
#define REACH_SLOTS 0xff
#define REACH_STASH 0x100
/* How far past its window a free slot is looked for: the whole table, up to what
 * bpf_loop allows (long only when the table is nearly full). */
#define CONN_SCAN_MAX (1 << 23)

static __always_inline struct conn_hash *conn_params(void)
{
	__u32 z = 0;
	return bpf_map_lookup_elem(&conn_hash, &z);
}

/* The flow key as two words, for hashing and comparing: the addresses, then the two
 * ports as the 32-bit word they make in memory (as TCP's and UDP's headers hold them)
 * and the protocol. */
static __always_inline void key_words(const struct flow_key *k, __u64 *w0, __u64 *w1)
{
	*w0 = (__u64)k->src | (__u64)k->dst << 32;
	*w1 = (__u64)*(const __u32 *)&k->sport | (__u64)k->proto << 32;
}

/* The first slot of a key's window: multilinear hashing (two random odd multipliers per
 * table, so which flows share a window cannot be known from outside), then one round of
 * mixing (the high half folded onto the low, times a third random multiplier), whose
 * high bits are reduced to the table by multiplying (Lemire's fastrange) rather than
 * dividing.
 *
 * The mixing is what keeps windows short for the flows a director mostly sees: keys in
 * an arithmetic progression (one client's consecutive ports, consecutive client
 * addresses). Multilinear hashing alone maps those to a progression of homes, which
 * for about one multiplier in ten falls into clumps that overflow their windows and
 * then the stash, refusing connections with most of the table free. With the round,
 * such keys fill the windows as random ones do. */
static __always_inline __u32 conn_home(const struct conn_hash *p, __u64 w0, __u64 w1)
{
	__u64 h = w0 * p->mul0 + w1 * p->mul1;
	h = (h ^ (h >> 32)) * p->mul2;
	return (__u32)(((h >> 32) * (__u64)p->slots) >> 32);
}

struct claim_scan {
	__u32 at;
	__u32 slots;
	__s32 got;
};

static __always_inline int slot_holds(const struct conn_slot *s, const struct flow_key *k,
				      __u64 w0, __u64 w1)
{
	return (s->tag & SLOT_STATE) == SLOT_LIVE && s->w0 == w0 && s->w1 == w1;
}

/* The IPv6 table's parameters: its conn_hash, within the conn_hash6 that also holds the
 * multipliers for the addresses. */
static __always_inline struct conn_hash6 *conn_params6_all(void)
{
	__u32 z = 0;
	return bpf_map_lookup_elem(&conn_hash6, &z);
}

static __always_inline struct conn_hash *conn_params6(void)
{
	struct conn_hash6 *p = conn_params6_all();
	return p ? &p->h : 0;
}

/* An IPv6 flow key as two words: its four address words hashed together with the
 * table's random odd multipliers (multilinear, as conn_home hashes the two words after),
 * then its ports and protocol as IPv4's. The first is not the addresses themselves, so a
 * slot's entry is compared in full as well (slot_holds6). */
static __always_inline __u64 addr_word6(__u64 s0, __u64 s1, __u64 d0, __u64 d1)
{
	struct conn_hash6 *p = conn_params6_all();
	return p ? s0 * p->amul[0] + s1 * p->amul[1] + d0 * p->amul[2] + d1 * p->amul[3] : 0;
}

static __always_inline void key_words6(const struct flow_key6 *k, __u64 *w0, __u64 *w1)
{
	const __u64 *s = (const __u64 *)k->src, *d = (const __u64 *)k->dst;
	*w0 = addr_word6(s[0], s[1], d[0], d[1]);
	*w1 = (__u64)*(const __u32 *)&k->sport | (__u64)k->proto << 32;
}

/* An IPv6 packet's flow key, written as five 64-bit words (the addresses, then the
 * ports' word, the protocol and the padding), and its words (key_words6) taken from the
 * packet's values rather than read back from the key: the CPU forwards a store to a
 * load of the same width, and makes a wider load that spans several stores wait. */
static __always_inline void flow_key6_of(struct flow_key6 *k, const __u8 *saddr,
					 const __u8 *daddr, const __be16 *ports, __u8 proto,
					 __u64 *w0, __u64 *w1)
{
	_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the ports' word, then proto");
	const __u64 *s = (const __u64 *)saddr, *d = (const __u64 *)daddr;
	__u64 *kw = (__u64 *)k;
	__u64 s0 = s[0], s1 = s[1], d0 = d[0], d1 = d[1];
	__u64 tail = (__u64)*(const __u32 *)ports | (__u64)proto << 32;
	kw[0] = s0;
	kw[1] = s1;
	kw[2] = d0;
	kw[3] = d1;
	kw[4] = tail;
	*w0 = addr_word6(s0, s1, d0, d1);
	*w1 = tail;
}

static __always_inline int same6(const __u8 *a, const __u8 *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;
	return x[0] == y[0] && x[1] == y[1];
}

/* Whether slot `s` holds IPv6 key `k`: its words, and the addresses of the entry's key
 * (client and VIP for a client's entry, real server and client for a reply entry; the
 * ports and protocol are all in w1). */
static __always_inline int slot_holds6(const struct conn_slot6 *s, const struct flow_key6 *k,
				       __u64 w0, __u64 w1)
{
	if ((s->tag & SLOT_STATE) != SLOT_LIVE || s->w0 != w0 || s->w1 != w1)
		return 0;
	/* The entry's source and destination by offset rather than by branches (fewer
	 * paths for the verifier in conn_find6's loop): client at 0 and VIP at 16 of the
	 * three addresses for a client's entry, real server at 32 and client at 0 for a
	 * reply entry. */
	__u32 r = s->c.c.flags & CONN_F_REPLY;
	const __u64 *src = (const __u64 *)(s->c.client + 32 * r);
	const __u64 *dst = (const __u64 *)(s->c.client + 16 * (r ^ 1));
	const __u64 *ks = (const __u64 *)k->src, *kd = (const __u64 *)k->dst;
	return !((src[0] ^ ks[0]) | (src[1] ^ ks[1]) | (dst[0] ^ kd[0]) | (dst[1] ^ kd[1]));
}

/* The table's functions, once for each family (conntab_impl.h): conn_get, conn_put,
 * conn_del and the rest for IPv4, conn_get6, conn_put6, conn_del6 and the rest for IPv6. */
#define CT_(name) name
#define CT_KEY struct flow_key
#define CT_SLOT struct conn_slot
#define CT_ENTRY struct conn
#include "conntab_impl.h"
#undef CT_
#undef CT_KEY
#undef CT_SLOT
#undef CT_ENTRY

#define CT_(name) name##6
#define CT_KEY struct flow_key6
#define CT_SLOT struct conn_slot6
#define CT_ENTRY struct conn6
#include "conntab_impl.h"
#undef CT_
#undef CT_KEY
#undef CT_SLOT
#undef CT_ENTRY

#endif
