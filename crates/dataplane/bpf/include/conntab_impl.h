/* The body of a connection table (see conntab.h), included once for each family with
 * CT_(name) naming its functions and maps, CT_KEY its flow key, CT_SLOT its slot and
 * CT_ENTRY its entry; conntab.h defines its conn_params, key_words and slot_holds first.
 * No include guard: it is meant to be included twice. */

/* Live entries per CONN_CHUNK slots, for the control plane to skip empty stretches of
 * the table when it reads it. */
static __always_inline void CT_(chunk_count)(__u32 slot, __s64 by)
{
	__u32 k = slot / CONN_CHUNK;
	__u64 *n = bpf_map_lookup_elem(&CT_(conn_chunks), &k);
	if (n)
		__sync_fetch_and_add(n, by);
}

/* The slot holding key `k`, whose words (key_words) are `w0` and `w1`, or -1. Only as
 * far into the window as the home slot's reach says an entry homed there went, and into
 * the stash only when one went there: a key not in the table (a new flow, traffic for
 * the host) costs a slot or two. A global function: the verifier checks its loop once,
 * not once for every way out of it at every caller. */
__attribute__((noinline)) int CT_(conn_find)(const CT_KEY *k, __u64 w0, __u64 w1)
{
	struct conn_hash *p = CT_(conn_params)();
	if (!k || !p || !p->slots)
		return -1;
	__u32 i = conn_home(p, w0, w1);
	__u32 n = p->slots;
	CT_SLOT *home = bpf_map_lookup_elem(&CT_(conn_slots), &i);
	if (!home)
		return -1;
	__u32 reach = home->reach;
	if (CT_(slot_holds)(home, k, w0, w1))
		return i;
	__u32 lim = reach & REACH_SLOTS;
	for (__u32 j = 1; j < lim && j < CONN_WINDOW; j++) {
		if (++i >= n)
			i = 0;
		CT_SLOT *s = bpf_map_lookup_elem(&CT_(conn_slots), &i);
		if (s && CT_(slot_holds)(s, k, w0, w1))
			return i;
	}
	if (!(reach & REACH_STASH) || !p->stashed)
		return -1;
	__u32 *stashed = bpf_map_lookup_elem(&CT_(conn_stash), k);
	if (!stashed)
		return -1;
	i = *stashed;
	CT_SLOT *s = bpf_map_lookup_elem(&CT_(conn_slots), &i);
	return s && CT_(slot_holds)(s, k, w0, w1) ? (int)i : -1;
}

/* The slot holding key `k` (words `w0`, `w1`), or NULL; its index in `*at`. The home
 * slot, where most entries sit, is looked at here, inline; conn_find looks further. */
static __always_inline CT_SLOT *CT_(conn_slot_at)(const CT_KEY *k, __u64 w0, __u64 w1,
						      __u32 *at)
{
	struct conn_hash *p = CT_(conn_params)();
	if (!p || !p->slots)
		return 0;
	__u32 slot = conn_home(p, w0, w1);
	CT_SLOT *s = bpf_map_lookup_elem(&CT_(conn_slots), &slot);
	if (!s)
		return 0;
	if (!CT_(slot_holds)(s, k, w0, w1)) {
		if (s->reach <= 1)
			return 0;
		int i = CT_(conn_find)(k, w0, w1);
		if (i < 0)
			return 0;
		slot = i;
		s = bpf_map_lookup_elem(&CT_(conn_slots), &slot);
	}
	*at = slot;
	return s;
}

/* The slot holding key `k`, or NULL. */
static __always_inline CT_SLOT *CT_(conn_slot_of)(const CT_KEY *k)
{
	__u64 w0, w1;
	__u32 at;
	CT_(key_words)(k, &w0, &w1);
	return CT_(conn_slot_at)(k, w0, w1, &at);
}

/* The entry of key `k`, or NULL. */
static __always_inline CT_ENTRY *CT_(conn_get)(const CT_KEY *k)
{
	CT_SLOT *s = CT_(conn_slot_of)(k);
	return s ? &s->c : 0;
}

/* conn_get with the key's words taken from where the key's fields came from (the
 * packet) rather than read back from the key just written on the stack: the CPU cannot
 * forward two 16-bit stores into one wider load, and waits for them instead. */
static __always_inline CT_ENTRY *CT_(conn_get_words)(const CT_KEY *k, __u64 w0, __u64 w1)
{
	__u32 at;
	CT_SLOT *s = CT_(conn_slot_at)(k, w0, w1, &at);
	return s ? &s->c : 0;
}

/* Claims slot `i` if it is free: 1 if this CPU got it (now SLOT_BUSY). */
static __always_inline int CT_(slot_claim)(__u32 i)
{
	CT_SLOT *s = bpf_map_lookup_elem(&CT_(conn_slots), &i);
	if (!s)
		return 0;
	__u64 t = s->tag;
	if ((t & SLOT_STATE) != SLOT_FREE)
		return 0;
	return __sync_val_compare_and_swap(&s->tag, t, t | SLOT_BUSY) == t;
}


static long CT_(claim_cb)(__u64 index, void *ctx)
{
	struct claim_scan *w = ctx;
	if (CT_(slot_claim)(w->at)) {
		w->got = w->at;
		return 1;
	}
	if (++w->at >= w->slots)
		w->at = 0;
	return 0;
}

/* conn_put's work, with the key's window locked. */
static __always_inline int CT_(conn_put_locked)(const CT_KEY *k, const CT_ENTRY *v,
					   __u64 flags, struct conn_hash *p, __u64 w0, __u64 w1,
					   __u32 home)
{
	__u32 found;
	CT_SLOT *old = CT_(conn_slot_at)(k, w0, w1, &found);
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
		if (got < 0 && CT_(slot_claim)(i)) {
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
		bpf_loop(n < CONN_SCAN_MAX ? n : CONN_SCAN_MAX, CT_(claim_cb), &w, 0);
		got = w.got;
		stashed = 1;
	}
	if (got < 0)
		return -E_2BIG;
	__u32 at = got;
	CT_SLOT *s = bpf_map_lookup_elem(&CT_(conn_slots), &at);
	CT_SLOT *h = bpf_map_lookup_elem(&CT_(conn_slots), &home);
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
		if (bpf_map_update_elem(&CT_(conn_stash), k, &at, BPF_ANY)) {
			__sync_fetch_and_add(&p->stashed, -1);
			__u64 t = s->tag;
			__sync_val_compare_and_swap(&s->tag, t, (t & ~SLOT_STATE) + SLOT_GEN);
			return -E_2BIG;
		}
	}
	/* Published: the compare-and-swap orders the writes above before it. */
	__u64 t = s->tag;
	__sync_val_compare_and_swap(&s->tag, t, (t & ~SLOT_STATE) | SLOT_LIVE);
	CT_(chunk_count)(at, 1);
	__sync_fetch_and_add(&p->live, 1);
	return 0;
}

/* Puts `v` under key `k`. flags: BPF_NOEXIST (fails with -E_EXIST when the key is there)
 * or BPF_ANY (overwrites it). -E_2BIG: the table is full. An IPv6 entry's own key
 * (client_key6, or reply_key6 for a reply entry) must be `k`: lookups compare it.
 *
 * Two CPUs putting the same key at once would each find it missing and take a slot, so
 * a put holds a lock for its key's home slot (one of CONN_LOCKS, by the home's low
 * bits) from the look to the publishing. A put that finds the lock held gives up with
 * -E_EXIST, as the hash map's BPF_NOEXIST does for the same SYN handled on two CPUs at
 * once; for a different flow whose home shares the lock, at the same moment, that drops
 * a first packet the client sends again. Lookups and deletes take no lock. */
__attribute__((noinline)) int CT_(conn_put)(const CT_KEY *k, const CT_ENTRY *v, __u64 flags)
{
	if (!k || !v)
		return -E_2BIG;
	struct conn_hash *p = CT_(conn_params)();
	if (!p || !p->slots)
		return -E_2BIG;
	__u64 w0, w1;
	CT_(key_words)(k, &w0, &w1);
	__u32 home = conn_home(p, w0, w1);
	__u32 li = home & (CONN_LOCKS - 1);
	__u64 *lock = bpf_map_lookup_elem(&CT_(conn_locks), &li);
	if (!lock)
		return -E_2BIG;
	if (__sync_val_compare_and_swap(lock, 0, 1) != 0)
		return -E_EXIST;
	int err = CT_(conn_put_locked)(k, v, flags, p, w0, w1, home);
	__sync_val_compare_and_swap(lock, 1, 0);
	return err;
}

/* Removes key `k`'s entry: 0, or -1 when it was not there (or another CPU removed it
 * first: only one remover succeeds). */
__attribute__((noinline)) int CT_(conn_del)(const CT_KEY *k)
{
	if (!k)
		return -1;
	__u64 w0, w1;
	__u32 at = 0;
	CT_(key_words)(k, &w0, &w1);
	CT_SLOT *s = CT_(conn_slot_at)(k, w0, w1, &at);
	if (!s)
		return -1;
	__u64 t = s->tag;
	if ((t & SLOT_STATE) != SLOT_LIVE || !CT_(slot_holds)(s, k, w0, w1))
		return -1;
	if (__sync_val_compare_and_swap(&s->tag, t, (t & ~SLOT_STATE) + SLOT_GEN) != t)
		return -1;
	CT_(chunk_count)(at, -1);
	struct conn_hash *p = CT_(conn_params)();
	if (!p)
		return 0;
	__sync_fetch_and_add(&p->live, -1);
	if (p->stashed && bpf_map_delete_elem(&CT_(conn_stash), k) == 0)
		__sync_fetch_and_add(&p->stashed, -1);
	return 0;
}
