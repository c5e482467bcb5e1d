/* The IPv4 connection table: an array the program indexes itself.
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
 * elements: a reader on another CPU may see a field change under it. */
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

/* Live entries per CONN_CHUNK slots, for the control plane to skip empty stretches of
 * the table when it reads it. */
static __always_inline void chunk_count(__u32 slot, __s64 by)
{
	__u32 k = slot / CONN_CHUNK;
	__u64 *n = bpf_map_lookup_elem(&conn_chunks, &k);
	if (n)
		__sync_fetch_and_add(n, by);
}

static __always_inline int slot_holds(const struct conn_slot *s, __u64 w0, __u64 w1)
{
	return (s->tag & SLOT_STATE) == SLOT_LIVE && s->w0 == w0 && s->w1 == w1;
}

/* The slot holding key `k`, whose words (key_words) are `w0` and `w1`, or -1. Only as
 * far into the window as the home slot's reach says an entry homed there went, and into
 * the stash only when one went there: a key not in the table (a new flow, traffic for
 * the host) costs a slot or two. A global function: the verifier checks its loop once,
 * not once for every way out of it at every caller. */
__attribute__((noinline)) int conn_find(const struct flow_key *k, __u64 w0, __u64 w1)
{
	struct conn_hash *p = conn_params();
	if (!k || !p || !p->slots)
		return -1;
	__u32 i = conn_home(p, w0, w1);
	__u32 n = p->slots;
	struct conn_slot *home = bpf_map_lookup_elem(&conn_slots, &i);
	if (!home)
		return -1;
	__u32 reach = home->reach;
	if (slot_holds(home, w0, w1))
		return i;
	__u32 lim = reach & REACH_SLOTS;
	for (__u32 j = 1; j < lim && j < CONN_WINDOW; j++) {
		if (++i >= n)
			i = 0;
		struct conn_slot *s = bpf_map_lookup_elem(&conn_slots, &i);
		if (s && slot_holds(s, w0, w1))
			return i;
	}
	if (!(reach & REACH_STASH) || !p->stashed)
		return -1;
	__u32 *stashed = bpf_map_lookup_elem(&conn_stash, k);
	if (!stashed)
		return -1;
	i = *stashed;
	struct conn_slot *s = bpf_map_lookup_elem(&conn_slots, &i);
	return s && slot_holds(s, w0, w1) ? (int)i : -1;
}

/* The slot holding key `k` (words `w0`, `w1`), or NULL; its index in `*at`. The home
 * slot, where most entries sit, is looked at here, inline; conn_find looks further. */
static __always_inline struct conn_slot *conn_slot_at(const struct flow_key *k, __u64 w0, __u64 w1,
						      __u32 *at)
{
	struct conn_hash *p = conn_params();
	if (!p || !p->slots)
		return 0;
	__u32 slot = conn_home(p, w0, w1);
	struct conn_slot *s = bpf_map_lookup_elem(&conn_slots, &slot);
	if (!s)
		return 0;
	if (!slot_holds(s, w0, w1)) {
		if (s->reach <= 1)
			return 0;
		int i = conn_find(k, w0, w1);
		if (i < 0)
			return 0;
		slot = i;
		s = bpf_map_lookup_elem(&conn_slots, &slot);
	}
	*at = slot;
	return s;
}

/* The slot holding key `k`, or NULL. */
static __always_inline struct conn_slot *conn_slot_of(const struct flow_key *k)
{
	__u64 w0, w1;
	__u32 at;
	key_words(k, &w0, &w1);
	return conn_slot_at(k, w0, w1, &at);
}

/* The entry of key `k`, or NULL. */
static __always_inline struct conn *conn_get(const struct flow_key *k)
{
	struct conn_slot *s = conn_slot_of(k);
	return s ? &s->c : 0;
}

/* conn_get with the key's words taken from where the key's fields came from (the
 * packet) rather than read back from the key just written on the stack: the CPU cannot
 * forward two 16-bit stores into one wider load, and waits for them instead. */
static __always_inline struct conn *conn_get_words(const struct flow_key *k, __u64 w0, __u64 w1)
{
	__u32 at;
	struct conn_slot *s = conn_slot_at(k, w0, w1, &at);
	return s ? &s->c : 0;
}

/* Claims slot `i` if it is free: 1 if this CPU got it (now SLOT_BUSY). */
static __always_inline int slot_claim(__u32 i)
{
	struct conn_slot *s = bpf_map_lookup_elem(&conn_slots, &i);
	if (!s)
		return 0;
	__u64 t = s->tag;
	if ((t & SLOT_STATE) != SLOT_FREE)
		return 0;
	return __sync_val_compare_and_swap(&s->tag, t, t | SLOT_BUSY) == t;
}

struct claim_scan {
	__u32 at;
	__u32 slots;
	__s32 got;
};

static long claim_cb(__u64 index, void *ctx)
{
	struct claim_scan *w = ctx;
	if (slot_claim(w->at)) {
		w->got = w->at;
		return 1;
	}
	if (++w->at >= w->slots)
		w->at = 0;
	return 0;
}

/* conn_put's work, with the key's window locked. */
static __always_inline int conn_put_locked(const struct flow_key *k, const struct conn *v,
					   __u64 flags, struct conn_hash *p, __u64 w0, __u64 w1,
					   __u32 home)
{
	__u32 found;
	struct conn_slot *old = conn_slot_at(k, w0, w1, &found);
	if (old) {
		if (flags == BPF_NOEXIST)
			return -E_EXIST;
		old->c = *v;
		return 0;
	}
	/* Full: as many entries as --max-connections allows (counted without a lock, so
	 * CPUs adding at the same moment may pass it by one each). */
	if (p->live >= p->limit)
		return -E_2BIG;
	__u32 n = p->slots;
	__u32 i = home;
	int got = -1;
	__u32 dist = 0;
#pragma unroll
	for (int j = 0; j < CONN_WINDOW; j++) {
		if (got < 0 && slot_claim(i)) {
			got = i;
			dist = j;
		}
		if (got < 0 && ++i >= n)
			i = 0;
	}
	int stashed = 0;
	if (got < 0) {
		/* The window is full: the first free slot after it, remembered in the stash. */
		struct claim_scan w = {.at = i, .slots = n, .got = -1};
		bpf_loop(n < CONN_SCAN_MAX ? n : CONN_SCAN_MAX, claim_cb, &w, 0);
		got = w.got;
		stashed = 1;
	}
	if (got < 0)
		return -E_2BIG;
	__u32 at = got;
	struct conn_slot *s = bpf_map_lookup_elem(&conn_slots, &at);
	struct conn_slot *h = bpf_map_lookup_elem(&conn_slots, &home);
	if (!s || !h)
		return -E_2BIG;
	s->w0 = w0;
	s->w1 = w1;
	s->c = *v;
	/* How far lookups of this home must look, before the entry can be seen; only
	 * puts change a reach, under the home's lock, and it never shrinks. */
	if (stashed)
		h->reach |= REACH_STASH;
	else if (dist + 1 > (h->reach & REACH_SLOTS))
		h->reach = (h->reach & ~REACH_SLOTS) | (dist + 1);
	if (stashed) {
		/* Counted first: a lookup that misses its window reads the stash only when the
		 * count says it holds something. */
		__sync_fetch_and_add(&p->stashed, 1);
		if (bpf_map_update_elem(&conn_stash, k, &at, BPF_ANY)) {
			__sync_fetch_and_add(&p->stashed, -1);
			__u64 t = s->tag;
			__sync_val_compare_and_swap(&s->tag, t, (t & ~SLOT_STATE) + SLOT_GEN);
			return -E_2BIG;
		}
	}
	/* Published: the compare-and-swap orders the writes above before it. */
	__u64 t = s->tag;
	__sync_val_compare_and_swap(&s->tag, t, (t & ~SLOT_STATE) | SLOT_LIVE);
	chunk_count(at, 1);
	__sync_fetch_and_add(&p->live, 1);
	return 0;
}

/* Puts `v` under key `k`. flags: BPF_NOEXIST (fails with -E_EXIST when the key is there)
 * or BPF_ANY (overwrites it). -E_2BIG: the table is full.
 *
 * Two CPUs putting the same key at once would each find it missing and take a slot, so
 * a put holds a lock for its key's home slot (one of CONN_LOCKS, by the home's low
 * bits) from the look to the publishing. A put that finds the lock held gives up with
 * -E_EXIST, as the hash map's BPF_NOEXIST does for the same SYN handled on two CPUs at
 * once; for a different flow whose home shares the lock, at the same moment, that drops
 * a first packet the client sends again. Lookups and deletes take no lock. */
__attribute__((noinline)) int conn_put(const struct flow_key *k, const struct conn *v, __u64 flags)
{
	if (!k || !v)
		return -E_2BIG;
	struct conn_hash *p = conn_params();
	if (!p || !p->slots)
		return -E_2BIG;
	__u64 w0, w1;
	key_words(k, &w0, &w1);
	__u32 home = conn_home(p, w0, w1);
	__u32 li = home & (CONN_LOCKS - 1);
	__u64 *lock = bpf_map_lookup_elem(&conn_locks, &li);
	if (!lock)
		return -E_2BIG;
	if (__sync_val_compare_and_swap(lock, 0, 1) != 0)
		return -E_EXIST;
	int err = conn_put_locked(k, v, flags, p, w0, w1, home);
	__sync_val_compare_and_swap(lock, 1, 0);
	return err;
}

/* Removes key `k`'s entry: 0, or -1 when it was not there (or another CPU removed it
 * first: only one remover succeeds). */
__attribute__((noinline)) int conn_del(const struct flow_key *k)
{
	if (!k)
		return -1;
	__u64 w0, w1;
	__u32 at = 0;
	key_words(k, &w0, &w1);
	struct conn_slot *s = conn_slot_at(k, w0, w1, &at);
	if (!s)
		return -1;
	__u64 t = s->tag;
	if ((t & SLOT_STATE) != SLOT_LIVE || s->w0 != w0 || s->w1 != w1)
		return -1;
	if (__sync_val_compare_and_swap(&s->tag, t, (t & ~SLOT_STATE) + SLOT_GEN) != t)
		return -1;
	chunk_count(at, -1);
	struct conn_hash *p = conn_params();
	if (!p)
		return 0;
	__sync_fetch_and_add(&p->live, -1);
	if (p->stashed && bpf_map_delete_elem(&conn_stash, k) == 0)
		__sync_fetch_and_add(&p->stashed, -1);
	return 0;
}

#endif
