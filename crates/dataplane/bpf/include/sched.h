/* The fourteen IPVS schedulers, in the data plane. Each makes the choice the reference
 * model in crates/sched makes for the same servers, counters and flow (a differential
 * test holds them to it). Slots without a present server count as weight 0. */
#ifndef FULCRUM_SCHED_H
#define FULCRUM_SCHED_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "constants.h"
#include "structs.h"
#include "maps.h"

#define LOCALITY_EXPIRY_NS (24ULL * 3600 * NSEC_PER_SEC)
#define GOLDEN_RATIO_32 0x61C88647U
#define SEED_FLOW 0x165667b19e3779f9ULL

static __always_inline __u32 slot_index(__u32 svc, __u32 slot)
{
	return (svc & (MAX_SERVICES - 1)) * MAX_DESTS + (slot & (MAX_DESTS - 1));
}

/* The slot at `pos` in the service's scan order (see the sched_order map): the map holds
 * slot + 1, and 0 (never written, as in maps pinned by an older build) keeps `pos`. Not
 * bounded here (slot_index bounds it where it indexes; the control plane writes only
 * slots below MAX_DESTS). A global function, so that to the verifier its answer is any
 * number, as a loop's index is: inlined, the branches and known ranges it leaves in the
 * scans' best-so-far fields multiply the states the verifier walks through their
 * callbacks past its limit. */
__attribute__((noinline)) int order_slot(__u32 svc, __u32 pos)
{
	__u32 k = slot_index(svc, pos);
	__u32 *slot = bpf_map_lookup_elem(&sched_order, &k);
	if (slot && *slot)
		return *slot - 1;
	return pos;
}

static __always_inline __u32 slot_at(__u32 svc, __u32 pos)
{
	return (__u32)order_slot(svc, pos);
}

static __always_inline int usable(const struct dest *d)
{
	return (d->flags & DEST_F_PRESENT) && d->weight > 0 && !(d->flags & DEST_F_OVERLOADED);
}

/* a.oh / a.w > b.oh / b.w, cross-multiplied as the kernel does. */
static __always_inline int heavier(__u64 aoh, __u32 aw, __u64 boh, __u32 bw)
{
	return aoh * bw > boh * aw;
}

static __always_inline __u64 overhead(const struct dest_conns *c)
{
	return (__u64)c->active * 256 + c->inactive;
}

/* One pass over the slots, in scan order, gathers what every counting scheduler needs:
 * on a tie the first in that order wins, as in the kernel's list walks. */
struct scan {
	__u32 svc;
	__u32 n;
	__u32 kind;
	__s32 best; /* least load (lc, wlc, sed, lblc, lblcr's new member) */
	__u64 best_oh;
	__u32 best_w;
	__s32 idle; /* nq: first usable with no active connection */
	__s32 fo;   /* fo: highest weight */
	__u32 fo_w;
	__s32 ovf;  /* ovf: highest weight with active <= weight */
	__u32 ovf_w;
	__u32 any_half; /* some usable server below half its weight in active */
	__u64 total;    /* twos: sum of usable weights */
	/* lblcr: the set, and its least and most loaded usable members */
	__u64 set[2];
	__s32 set_min;
	__u64 min_oh;
	__u32 min_w;
	__s32 set_max;
	__u64 max_oh;
	__u32 max_w;
};

static long scan_cb(__u32 pos, void *arg)
{
	struct scan *s = arg;
	if (pos >= s->n)
		return 1;
	__u32 i = slot_at(s->svc, pos);
	__u32 k = slot_index(s->svc, i);
	struct dest *d = bpf_map_lookup_elem(&dests, &k);
	struct dest_conns *c = bpf_map_lookup_elem(&dest_conns, &k);
	if (!d || !c)
		return 0;
	__u64 bit = 1ULL << (i & 63);
	__u32 word = (i >> 6) & 1;
	if (!usable(d)) {
		s->set[word] &= ~bit;
		return 0;
	}
	__u32 active = c->active;
	__u64 oh = overhead(c);
	__u32 w = d->weight;
	__u64 load = oh;
	__u32 lw = w;
	if (s->kind == SCHED_LC)
		lw = 1;
	else if (s->kind == SCHED_SED || s->kind == SCHED_NQ)
		load = (__u64)active + 1;
	if (s->best < 0 || heavier(s->best_oh, s->best_w, load, lw)) {
		s->best = i;
		s->best_oh = load;
		s->best_w = lw;
	}
	if (s->idle < 0 && active == 0)
		s->idle = i;
	if (s->fo < 0 || w > s->fo_w) {
		s->fo = i;
		s->fo_w = w;
	}
	if (active <= w && (s->ovf < 0 || w > s->ovf_w)) {
		s->ovf = i;
		s->ovf_w = w;
	}
	if ((__u64)active * 2 < w)
		s->any_half = 1;
	s->total += w;
	if (s->set[word] & bit) {
		if (s->set_min < 0 || heavier(s->min_oh, s->min_w, oh, w)) {
			s->set_min = i;
			s->min_oh = oh;
			s->min_w = w;
		}
		if (s->set_max < 0 || heavier(oh, w, s->max_oh, s->max_w)) {
			s->set_max = i;
			s->max_oh = oh;
			s->max_w = w;
		}
	}
	return 0;
}

/* lblc/lblcr: overloaded (more active than weight) while some server is at half load. */
static __always_inline int overloaded_vs_others(struct scan *s, __u32 slot)
{
	__u32 k = slot_index(s->svc, slot);
	struct dest *d = bpf_map_lookup_elem(&dests, &k);
	struct dest_conns *c = bpf_map_lookup_elem(&dest_conns, &k);
	if (!d || !c)
		return 1;
	return c->active > d->weight && s->any_half;
}

static __always_inline int slot_usable(__u32 svc, __u32 slot)
{
	__u32 k = slot_index(svc, slot);
	struct dest *d = bpf_map_lookup_elem(&dests, &k);
	return d && usable(d);
}

/* rr: the next usable slot after the last chosen one, in scan order (the state holds
 * positions in it). */
struct rr_walk {
	__u32 svc;
	__u32 n;
	__u32 start;
	__s32 found; /* position */
	__s32 slot;
};

static long rr_cb(__u32 k, void *arg)
{
	struct rr_walk *w = arg;
	if (k >= w->n)
		return 1;
	__u32 i = w->start + k;
	if (i >= w->n)
		i -= w->n;
	__u32 slot = slot_at(w->svc, i);
	if (slot_usable(w->svc, slot)) {
		w->found = i;
		w->slot = slot;
		return 1;
	}
	return 0;
}

__attribute__((noinline)) int sched_rr(struct service_value *sv, struct sched_state *st)
{
	if (!sv || !st)
		return -1;
	for (int attempt = 0; attempt < 4; attempt++) {
		__u64 old = st->rr;
		struct rr_walk w = { .svc = sv->id, .n = sv->ndests, .start = 0, .found = -1, .slot = -1 };
		if (old > 0 && old < w.n)
			w.start = old;
		bpf_loop(MAX_DESTS, rr_cb, &w, 0);
		if (w.found < 0)
			return -1;
		if (__sync_val_compare_and_swap(&st->rr, old, (__u64)w.found + 1) == old)
			return w.slot;
	}
	return -1;
}

/* wrr: the kernel's walk with the current weight stepping down by the gcd, in scan order
 * (the state holds a position in it). */
struct wrr_walk {
	__u32 svc;
	__u32 n;
	__u32 i;
	__s32 cw;
	__s32 mw;
	__s32 di;
	__s32 found; /* position */
	__s32 slot;
};

static long wrr_cb(__u32 k, void *arg)
{
	struct wrr_walk *w = arg;
	if (w->i >= w->n) {
		w->i = 0;
		w->cw -= w->di;
		if (w->cw <= 0)
			w->cw = w->mw;
	}
	__u32 slot = slot_at(w->svc, w->i);
	__u32 key = slot_index(w->svc, slot);
	struct dest *d = bpf_map_lookup_elem(&dests, &key);
	if (d && (d->flags & DEST_F_PRESENT) && !(d->flags & DEST_F_OVERLOADED) && d->weight > 0 &&
	    (__s64)d->weight >= w->cw) {
		w->found = w->i;
		w->slot = slot;
		return 1;
	}
	w->i++;
	return 0;
}

__attribute__((noinline)) int sched_wrr(struct service_value *sv, struct sched_state *st)
{
	if (!sv || !st)
		return -1;
	if (sv->wrr_mw <= 0 || sv->ndests == 0)
		return -1;
	for (int attempt = 0; attempt < 4; attempt++) {
		__u64 old = st->wrr;
		__u32 last1 = old >> 32;
		struct wrr_walk w = {
			.svc = sv->id,
			.n = sv->ndests,
			.i = last1,
			.cw = (__s32)(__u32)old,
			.mw = sv->wrr_mw,
			.di = sv->wrr_di > 0 ? sv->wrr_di : 1,
			.found = -1,
			.slot = -1,
		};
		if (w.cw <= 0 || w.cw > w.mw)
			w.cw = w.mw;
		__u32 cycles = (__u32)w.mw / (__u32)w.di + 2;
		__u32 steps = cycles * (w.n + 1);
		if (steps > (1U << 22))
			steps = 1U << 22;
		bpf_loop(steps, wrr_cb, &w, 0);
		__u64 next = w.found < 0 ? (__u64)(__u32)w.cw
					 : ((__u64)(w.found + 1) << 32) | (__u32)w.cw;
		if (__sync_val_compare_and_swap(&st->wrr, old, next) == old)
			return w.found < 0 ? -1 : w.slot;
	}
	return -1;
}

/* twos: xorshift64*, as the model's Rng. */
static __always_inline __u64 xorshift(__u64 x)
{
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	return x;
}

struct twos_walk {
	__u32 svc;
	__u32 n;
	__s64 r1;
	__s64 r2;
	__s32 c1; /* positions in scan order */
	__s32 c2;
};

static long twos_cb(__u32 pos, void *arg)
{
	struct twos_walk *w = arg;
	if (pos >= w->n)
		return 1;
	__u32 k = slot_index(w->svc, slot_at(w->svc, pos));
	struct dest *d = bpf_map_lookup_elem(&dests, &k);
	if (!d || !usable(d))
		return 0;
	w->r1 -= d->weight;
	w->r2 -= d->weight;
	if (w->r1 <= 0 && w->c1 < 0)
		w->c1 = pos;
	if (w->r2 <= 0 && w->c2 < 0)
		w->c2 = pos;
	return w->c1 >= 0 && w->c2 >= 0;
}

__attribute__((noinline)) int sched_twos(struct service_value *sv, struct sched_state *st, struct scan *s)
{
	if (!sv || !st || !s)
		return -1;
	if (s->total == 0)
		return -1;
	__u64 old, x1, x2;
	int attempt = 0;
	do {
		old = st->rng;
		x1 = xorshift(old ? old : 1);
		x2 = xorshift(x1);
	} while (__sync_val_compare_and_swap(&st->rng, old, x2) != old && ++attempt < 4);
	__u32 o1 = (x1 * 0x2545F4914F6CDD1DULL) >> 32;
	__u32 o2 = (x2 * 0x2545F4914F6CDD1DULL) >> 32;
	struct twos_walk w = {
		.svc = sv->id,
		.n = sv->ndests,
		.r1 = (__s64)(o1 % (s->total + 1)),
		.r2 = (__s64)(o2 % (s->total + 1)),
		.c1 = -1,
		.c2 = -1,
	};
	bpf_loop(MAX_DESTS, twos_cb, &w, 0);
	if (w.c1 < 0)
		return -1;
	if (w.c2 < 0)
		w.c2 = w.c1;
	/* Positions in scan order, to slots. */
	w.c1 = slot_at(sv->id, w.c1);
	w.c2 = slot_at(sv->id, w.c2);
	__u32 k1 = slot_index(sv->id, w.c1), k2 = slot_index(sv->id, w.c2);
	struct dest *d1 = bpf_map_lookup_elem(&dests, &k1);
	struct dest *d2 = bpf_map_lookup_elem(&dests, &k2);
	struct dest_conns *n1 = bpf_map_lookup_elem(&dest_conns, &k1);
	struct dest_conns *n2 = bpf_map_lookup_elem(&dest_conns, &k2);
	if (!d1 || !d2 || !n1 || !n2)
		return w.c1;
	return heavier(overhead(n1), d1->weight, overhead(n2), d2->weight) ? w.c2 : w.c1;
}

static __always_inline __s32 table_at(__u32 svc, __u32 slot)
{
	struct table_key tk = { .svc = svc, .slot = slot };
	__u32 *v = bpf_map_lookup_elem(&sched_tables, &tk);
	return v ? (__s32)*v : -1;
}

/* sh: the kernel's hash of source address (and port), with fallback over the buckets. */
struct sh_walk {
	__u32 svc;
	__u32 n;
	__u32 hash;
	__u32 first;
	__s32 found;
};

static __always_inline __u32 sh_bucket(__u32 hash, __u32 offset)
{
	return (offset + hash) & 255;
}

static long sh_cb(__u32 offset, void *arg)
{
	struct sh_walk *w = arg;
	__s32 slot = table_at(w->svc, sh_bucket(w->hash, (offset + w->first) & 255));
	if (slot >= 0 && (__u32)slot < w->n && slot_usable(w->svc, slot)) {
		w->found = slot;
		return 1;
	}
	return 0;
}

__attribute__((noinline)) int sched_sh(struct service_value *sv, __u32 src, __u32 sport)
{
	if (!sv)
		return -1;
	__u32 port = (sv->flags & SVC_F_SH_PORT) ? bpf_ntohs((__be16)sport) : 0;
	__u32 hash = ((port + bpf_ntohl(src)) * GOLDEN_RATIO_32) >> 24;
	__u32 first = sh_bucket(hash, 0);
	__s32 slot = table_at(sv->id, first);
	if (slot < 0)
		return -1;
	if ((__u32)slot < sv->ndests && slot_usable(sv->id, slot))
		return slot;
	if (!(sv->flags & SVC_F_SH_FALLBACK))
		return -1;
	struct sh_walk w = { .svc = sv->id, .n = sv->ndests, .hash = hash, .first = first, .found = -1 };
	bpf_loop(256, sh_cb, &w, 0);
	return w.found;
}

/* mh: Maglev lookup of the flow's slot, walking on with mh-fallback. */
static __always_inline __u64 mix(__u64 v, __u64 seed)
{
	__u64 z = v ^ seed;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

struct mh_walk {
	__u32 svc;
	__u32 n;
	__u32 first;
	__u32 m;
	__s32 found;
};

static long mh_cb(__u32 k, void *arg)
{
	struct mh_walk *w = arg;
	if (k + 1 >= w->m)
		return 1;
	__u32 t = w->first + k + 1;
	if (t >= w->m)
		t -= w->m;
	__s32 slot = table_at(w->svc, t);
	if (slot >= 0 && (__u32)slot < w->n && slot_usable(w->svc, slot)) {
		w->found = slot;
		return 1;
	}
	return 0;
}

__attribute__((noinline)) int sched_mh(struct service_value *sv, __u32 src, __u32 sport)
{
	if (!sv)
		return -1;
	__u32 m = sv->table_size;
	if (m < 2)
		return -1;
	__u64 port = (sv->flags & SVC_F_MH_PORT) ? bpf_ntohs((__be16)sport) : 0;
	__u64 h = mix(((__u64)bpf_ntohl(src) << 16) | port, SEED_FLOW);
	__u32 first = h % m;
	__s32 slot = table_at(sv->id, first);
	if (slot >= 0 && (__u32)slot < sv->ndests && slot_usable(sv->id, slot))
		return slot;
	if (!(sv->flags & SVC_F_MH_FALLBACK))
		return -1;
	struct mh_walk w = { .svc = sv->id, .n = sv->ndests, .first = first, .m = m, .found = -1 };
	bpf_loop(1 << 17, mh_cb, &w, 0);
	return w.found;
}

/* dh: the kernel's multiplicative hash of the destination address. */
__attribute__((noinline)) int sched_dh(struct service_value *sv, __u32 dst)
{
	if (!sv)
		return -1;
	__u32 bucket = (bpf_ntohl(dst) * 2654435761U) & 255;
	__s32 slot = table_at(sv->id, bucket);
	if (slot >= 0 && (__u32)slot < sv->ndests && slot_usable(sv->id, slot))
		return slot;
	return -1;
}

__attribute__((noinline)) int sched_lblc(struct service_value *sv, struct scan *s, __u32 dst, __u64 now)
{
	if (!sv || !s)
		return -1;
	struct locality_key lk = { .svc = sv->id, .addr = dst };
	struct locality_value *lv = bpf_map_lookup_elem(&locality, &lk);
	__s32 chosen = -1;
	if (lv && now - lv->used < LOCALITY_EXPIRY_NS && lv->dest < sv->ndests &&
	    slot_usable(sv->id, lv->dest) && !overloaded_vs_others(s, lv->dest))
		chosen = lv->dest;
	if (chosen < 0)
		chosen = s->best;
	if (chosen < 0)
		return -1;
	struct locality_value nv = { .used = now, .changed = now, .dest = chosen };
	bpf_map_update_elem(&locality, &lk, &nv, BPF_ANY);
	return chosen;
}

static __always_inline __u32 popcount128(const __u64 *set)
{
	return __builtin_popcountll(set[0]) + __builtin_popcountll(set[1]);
}

__attribute__((noinline)) int sched_lblcr(struct scan *s, struct locality_value *lv, __u64 now)
{
	if (!s || !lv)
		return -1;
	/* s->set is the entry's set with unusable members dropped; set_min and set_max are
	 * its least and most loaded members. */
	__s32 chosen;
	if (s->set_min >= 0 && !overloaded_vs_others(s, s->set_min)) {
		chosen = s->set_min;
	} else {
		chosen = s->best;
		if (chosen < 0)
			return -1;
		__u64 bit = 1ULL << (chosen & 63);
		__u32 word = (chosen >> 6) & 1;
		if (!(s->set[word] & bit)) {
			s->set[word] |= bit;
			lv->changed = now;
		}
	}
	if (popcount128(s->set) > 1 && now - lv->changed >= LOCALITY_EXPIRY_NS && s->set_max >= 0 &&
	    s->set_max != chosen) {
		s->set[(s->set_max >> 6) & 1] &= ~(1ULL << (s->set_max & 63));
		lv->changed = now;
	}
	lv->set[0] = s->set[0];
	lv->set[1] = s->set[1];
	lv->used = now;
	return chosen;
}

/* Chooses a real-server slot for a new connection, or -1. A global function, so the
 * verifier checks it once on its own rather than inside every path that reaches it. */
__attribute__((noinline)) int schedule(struct service_value *sv, __u32 src, __u32 sport,
				       __u32 dst, __u64 now)
{
	if (!sv)
		return -1;
	__u32 id = sv->id & (MAX_SERVICES - 1);
	struct sched_state *st = bpf_map_lookup_elem(&sched_state, &id);
	if (!st)
		return -1;
	switch (sv->sched) {
	case SCHED_RR:
		return sched_rr(sv, st);
	case SCHED_WRR:
		return sched_wrr(sv, st);
	case SCHED_DH:
		return sched_dh(sv, dst);
	case SCHED_SH:
		return sched_sh(sv, src, sport);
	case SCHED_MH:
		return sched_mh(sv, src, sport);
	default:
		break;
	}
	struct scan s = {
		.svc = id, .n = sv->ndests, .kind = sv->sched,
		.best = -1, .idle = -1, .fo = -1, .ovf = -1, .set_min = -1, .set_max = -1,
	};
	struct locality_key lk = { .svc = id, .addr = dst };
	struct locality_value *lv = 0;
	if (sv->sched == SCHED_LBLCR) {
		lv = bpf_map_lookup_elem(&locality, &lk);
		if (!lv || now - lv->used >= LOCALITY_EXPIRY_NS) {
			/* A fresh entry, made in the scratch map: on the stack it would take 48
			 * of the call chain's 512 bytes. */
			__u32 zero = 0;
			struct locality_value *fresh = bpf_map_lookup_elem(&scratch_locality, &zero);
			if (!fresh)
				return -1;
			__builtin_memset(fresh, 0, sizeof(*fresh));
			fresh->used = now;
			fresh->changed = now;
			bpf_map_update_elem(&locality, &lk, fresh, BPF_ANY);
			lv = bpf_map_lookup_elem(&locality, &lk);
		}
		if (!lv)
			return -1;
		s.set[0] = lv->set[0];
		s.set[1] = lv->set[1];
	}
	bpf_loop(MAX_DESTS, scan_cb, &s, 0);
	switch (sv->sched) {
	case SCHED_LC:
	case SCHED_WLC:
	case SCHED_SED:
		return s.best;
	case SCHED_NQ:
		return s.idle >= 0 ? s.idle : s.best;
	case SCHED_FO:
		return s.fo;
	case SCHED_OVF:
		return s.ovf;
	case SCHED_TWOS:
		return sched_twos(sv, st, &s);
	case SCHED_LBLC:
		return sched_lblc(sv, &s, dst, now);
	case SCHED_LBLCR:
		return sched_lblcr(&s, lv, now);
	default:
		return -1;
	}
}

#endif
