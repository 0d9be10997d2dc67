/*
 * The concurrency protocol of the GPA MMU, as a Promela model checked
 * exhaustively by spin (tests/spin/README.md says what is modelled and
 * what is abstracted; tests/unit/test_spin_model.c runs it and each
 * mutation from `make test`).
 *
 * Two vCPUs, two guest pages, one host, one VMM. The protocol is the
 * parallel-fault one (DESIGN.md, "Concurrency"): faults run under the read
 * side of mmu_lock and install entries with compare-and-exchange (upgrade
 * only); the notifier and the dirty log's write-protect run under the
 * write side and end with a remote TLB shootdown; vCPUs use their TLBs
 * without any lock and acknowledge shootdowns between accesses.
 *
 * Every step names the function of src/ it stands for. Steps between which
 * no other process could observe or change anything that matters are
 * merged into one atomic step (d_step, atomic); each merge says why it
 * loses no interleaving.
 *
 * The three contracts of DESIGN.md are assertions on named flags, so that
 * pan's report says which one broke:
 *   c1_tlb_backed     contract 1: a TLB translation a vCPU uses is backed
 *                     by the entry (same frame; dirty for a store), unless
 *                     the operation that removed or downgraded the entry
 *                     has not yet returned from its remote flush;
 *   c2_write_logged   contract 2: every completed guest write is reported
 *                     by a GET that returned after it, or is still in the
 *                     bitmap at the end (the next GET reports it);
 *   c3_frame_current  contract 3: an access reaches the frame that backs
 *                     the page now, never one the host has replaced.
 *
 * Mutations (spin -DNAME): each removes one step of the protocol and must
 * make one of the assertions fail; the list is in README.md and in the test.
 */

#define NVCPU	2
#define NPAGE	2
#ifndef ROUNDS
#define ROUNDS	2	/* GET rounds of the VMM */
#endif
#ifndef HPAGE
#define HPAGE	0	/* the page the host event replaces */
#endif
#define NEWFRAME 3	/* the frame it gets (pages start at frames 1 and 2) */

/* vcpu->mode (vcpu.h) */
#define OUT	0
#define IN	1

/*
 * A leaf entry and a TLB entry, in one byte: PRESENT (PRESENT|VALID in the
 * real entry), DIRTY (the writeable bits DIRTY|WRITE: a store may go
 * through), the host frame from bit 2. Every slot is writable and logging
 * is on from the start, so the MODIFIED marker is always set and is left
 * out; a TLB entry holds the same byte (DIRTY: TLBT_WRITE).
 */
#define PRESENT	1
#define DIRTY	2
#define present(e)	(((e) & PRESENT) != 0)
#define dirty(e)	(((e) & DIRTY) != 0)
#define frame(e)	((e) >> 2)
#define mkpte(f, d)	(PRESENT | ((d) -> DIRTY : 0) | ((f) << 2))
#define TI(v, p)	((v) * NPAGE + (p))	/* tlb[] index */

/*
 * A vCPU's guest program: up to 5 operations of 3 bits each, read from
 * bit 0 up. An access is page | store << 1; OP_EXIT is an exit to the VMM
 * and a new KVM_RUN (an MMIO exit, a kick) between two accesses.
 */
#define OP(page, store)	((page) | ((store) << 1))
#define OP_EXIT		4
#define R0	OP(0, 0)
#define R1	OP(1, 0)
#define W0	OP(0, 1)
#define W1	OP(1, 1)
#define PROG2(a, b)		((a) | ((b) << 3))
#define PROG3(a, b, c)		(PROG2(a, b) | ((c) << 6))
#define PROG4(a, b, c, d)	(PROG3(a, b, c) | ((d) << 9))

/* ---- shared state ----------------------------------------------------- */

/* vm->mmu_lock as a reader-writer lock (faults read, range operations write) */
byte readers;
bit writer;

byte pte[NPAGE];	/* the GPA table's leaf entries */
byte hostframe[NPAGE];	/* the frame the host maps at each page's HVA now */
byte pins;		/* get_page references held (st_pinned) */

byte inv_seq;		/* vm->mmu_invalidate_seq */
byte in_progress;	/* vm->mmu_invalidate_in_progress */
byte inv_page;		/* vm->inv_hva_start/end: one page */

bit logbit[NPAGE];	/* the slot's dirty bitmap */

bit mode[NVCPU];	/* vcpu->mode */
bit req[NVCPU];		/* REQ_TLB_FLUSH in vcpu->requests */
byte tlb[NVCPU * NPAGE];	/* vcpu->tlb: one entry per page */
byte gpaflush[NVCPU];	/* vcpu->gpa_flush[]: a bit per page */

/* ---- ghost state (no counterpart in src/) ---------------------------------- */

bit flushing[NPAGE];	/* entry removed/downgraded, its remote flush not returned */
bit harvesting[NPAGE];	/* bit taken by a GET that has not returned */
bit owed[NPAGE];	/* a write completed that no returned GET reported */

/* the assertions' names (set and checked in one atomic step: not state) */
hidden byte c1_tlb_backed;
hidden byte c2_write_logged;
hidden byte c3_frame_current;
hidden byte accounting_zero;

/* ---- mmu_lock (vm.h; target: pthread_rwlock) ------------------------------- */

inline read_lock()
{
	atomic { writer == 0 -> readers++ }
}

inline read_unlock()
{
	readers--
}

inline write_lock()
{
	atomic { writer == 0 && readers == 0 -> writer = 1 }
}

inline write_unlock()
{
	writer = 0
}

/* ---- gpamm_flush_remote_tlbs() (vcpu.c) -------------------------------- */

/*
 * Set REQ_TLB_FLUSH on every vCPU, then wait for each vCPU that is in
 * guest mode until it has cleared it. Both requests are set in one step:
 * each vCPU reads only its own, and the waits come after both. A wait
 * reads mode and requests in one step where the code loads mode, then
 * requests: either way it ends only once the vCPU is out of guest mode or
 * has acknowledged. Promela's memory is sequentially consistent, as the
 * code's atomics are (seq_cst) on both sides of this handshake.
 *
 * FLUSH_MODE_FIRST reads the modes before setting the requests (the order
 * the comment above gpamm_flush_remote_tlbs() forbids): a vCPU that enters
 * guest mode in between and has just checked its requests is not waited for.
 * The caller declares `bit seen0, seen1;` for it.
 */
#ifdef FLUSH_MODE_FIRST
inline flush_remote_tlbs()
{
	d_step { seen0 = mode[0]; seen1 = mode[1] };
	d_step { req[0] = 1; req[1] = 1 };
	(!seen0 || mode[0] != IN || !req[0]);
	(!seen1 || mode[1] != IN || !req[1]);
	d_step { seen0 = 0; seen1 = 0 }
}
#else
inline flush_remote_tlbs()
{
	d_step { req[0] = 1; req[1] = 1 };
	(mode[0] != IN || !req[0]);
	(mode[1] != IN || !req[1])
}
#endif

/* ---- vCPU side: guest mode and requests (vcpu.c) ----------------------------- */

/*
 * vcpu_service_requests(), REQ_TLB_FLUSH part: drop the whole TLB, then
 * clear the request. One step: only this vCPU writes its TLB, and a second
 * request set between the flush and the clear finds the TLB empty already.
 */
inline service_requests(v)
{
	if
	:: req[v] -> tlb[TI(v, 0)] = 0; tlb[TI(v, 1)] = 0; req[v] = 0
	:: else
	fi
}

/*
 * vcpu_enter_guest(): IN_GUEST_MODE is stored before the requests are
 * read (the flusher's order is the reverse), then the requests and the
 * per-GPA flushes the faults queued (gpamm_vcpu_queue_gpa_flush) are taken.
 */
inline enter_guest(v)
{
	mode[v] = IN;
	d_step {
		service_requests(v);
		if
		:: gpaflush[v] & 1 -> tlb[TI(v, 0)] = 0
		:: else
		fi;
		if
		:: gpaflush[v] & 2 -> tlb[TI(v, 1)] = 0
		:: else
		fi;
		gpaflush[v] = 0
	}
}

/* vcpu_leave_guest() */
inline leave_guest(v)
{
	mode[v] = OUT
}

/* ---- vCPU side: the fault (mmu.c) ------------------------------------------- */

/*
 * One turn of the loop of leaf_rmw() and gpamm_pgt_map_upgrade()
 * (pgtable.c) around pte_cmpxchg(): compute @new from the snapshot @old;
 * nothing to do (ok); else compare and exchange (ok), or, when the entry
 * moved, refresh the snapshot for the next turn. NO_CMPXCHG stores without
 * comparing (the seed's set_pte, right only under an exclusive lock).
 */
#ifdef NO_CMPXCHG
#define CAS_TURN(p, compute)	d_step { compute; if :: new == old -> ok = 1 :: else -> pte[p] = new; ok = 1 fi }
#else
#define CAS_TURN(p, compute)	d_step { compute; if :: new == old -> ok = 1 :: else -> if :: pte[p] == old -> pte[p] = new; ok = 1 :: else -> old = pte[p] fi fi }
#endif

/* access_fn(): young always (not modelled), dirty for a store */
#define FAST_NEW	new = old | (w -> DIRTY : 0)
/* gpamm_pgt_map_upgrade(): the same page keeps what it has and gains @want
 * (never a downgrade); anything else is replaced. NO_CMPXCHG installs @want
 * as the seed did, over whatever another fault installed meanwhile. */
#ifdef NO_CMPXCHG
#define SLOW_NEW	new = want
#else
#define SLOW_NEW	new = ((present(old) && frame(old) == f) -> (old | want) : want)
#endif

/*
 * fault_must_retry(): an invalidation of this page in progress, or one
 * ended since the sample. Both fields change only under the write lock, so
 * the check is part of the step that takes the read lock.
 */
#if defined(NO_RETRY)
#define must_retry(p, s)	false
#elif defined(NO_SEQ_CHECK)
#define must_retry(p, s)	(in_progress && inv_page == p)
#elif defined(NO_INPROGRESS_CHECK)
#define must_retry(p, s)	(inv_seq != s)
#else
#define must_retry(p, s)	((in_progress && inv_page == p) || inv_seq != s)
#endif

/*
 * gpamm_mmu_fault(): fault_fast(), else fault_slow(); then the deferred
 * flush of this page's TLB entry (gpamm_vcpu_queue_gpa_flush), taken at
 * the next guest entry. The caller has left guest mode (xlate_fault) and
 * enters it again after. Queueing the flush is merged into the unlock
 * step: gpa_flush[] is the vCPU's own, nobody else reads it.
 *
 * A snapshot of the entry taken in the step that takes the read lock
 * loses nothing: until then only other faults (readers too) can change
 * the entry, and their changes commute with taking the read side.
 */
inline mmu_fault(v, p, w)
{
	/* fault_fast(): read lock, gpamm_pgt_access_fault() reads the entry */
	atomic { read_lock(); old = pte[p] };
	if
	:: present(old) ->
		do
		:: ok -> break
		:: else -> CAS_TURN(p, FAST_NEW)
		od;
		/* gpamm_mark_page_dirty() under the lock if this made it dirty;
		 * unlock (a spurious fault, new == old, just returns) */
		atomic {
			if
			:: dirty(new) && !dirty(old) -> logbit[p] = 1
			:: else
			fi;
			read_unlock();
			gpaflush[v] = gpaflush[v] | (1 << p);
			old = 0; new = 0; ok = 0
		}
	:: else ->
		/* -ENOENT: unlock, fault_slow(); the memslot lookup, the
		 * permissions and the memcache top-up are abstracted: one
		 * writable slot, logging on */
		d_step { read_unlock(); old = 0 };
		do
		:: true ->
#ifdef SEQ_AFTER_PIN
			d_step { f = hostframe[p]; pins++ };	/* get_page() */
			s = inv_seq;				/* sample, too late */
#else
			s = inv_seq;				/* sample (acquire) */
			d_step { f = hostframe[p]; pins++ };	/* get_page(): pin */
#endif
			atomic {
				read_lock();
				retry = must_retry(p, s);
				if
				:: !retry ->
					/* fault_install(): the entry a store makes
					 * dirty (logging on: a load maps it clean) */
					want = mkpte(f, w);
					old = pte[p]
				:: else
				fi
			};
			if
			:: retry ->
				/* unlock, put_page(), go round */
				d_step { read_unlock(); pins--; f = 0; s = 0; retry = 0 }
			:: else -> break
			fi
		od;
		do
		:: ok -> break
		:: else -> CAS_TURN(p, SLOW_NEW)
		od;
		if
		:: present(old) && frame(old) != f ->
			/* another page replaced: a removal, flushed before the
			 * lock is dropped (the retry check rules it out) */
			flushing[p] = 1;
			flush_remote_tlbs();
			flushing[p] = 0
		:: else
		fi;
		/* logged when this fault made it dirty; unlock; put_page() */
		d_step {
			if
			:: dirty(new) && !dirty(old) -> logbit[p] = 1
			:: else
			fi;
			read_unlock();
			pins--;
			gpaflush[v] = gpaflush[v] | (1 << p);
			old = 0; new = 0; want = 0; f = 0; s = 0; ok = 0
		}
	fi
}

/* ---- vCPU ----------------------------------------------------------------- */

/*
 * gpamm_vcpu_run() and the guest program: each access is xlate() (requests,
 * TLB lookup, the emulated walker's refill, or a fault and a retry) and then
 * the load or store through the translation found.
 */
proctype vcpu(byte v; int prog; byte nops)
{
	byte i, op, p;
	bit w, hit;
	byte old, new, want, f, s;	/* the fault's locals */
	bit ok, retry;
#ifdef FLUSH_MODE_FIRST
	bit seen0, seen1;
#endif

	enter_guest(v);	/* gpamm_vcpu_run() */
	for (i : 0 .. nops - 1) {
		d_step { op = (prog >> (3 * i)) & 7; p = op & 1; w = (op >> 1) & 1 };
		if
		:: op == OP_EXIT ->
			/* vcpu_exit() to the VMM and the next gpamm_vcpu_run() */
			leave_guest(v);
			enter_guest(v)
		:: else ->
			do
			:: true ->
				/*
				 * xlate(): requests, tlb_lookup(), else hw_walk() and
				 * the fill (tlb_fill_base, DIRTY -> writable). One step:
				 * a flusher's request set after the check is seen at the
				 * next access either way, and the walk reads the entry
				 * once, as the fill records it.
				 */
				d_step {
					service_requests(v);
					if
					:: present(tlb[TI(v, p)]) && (!w || dirty(tlb[TI(v, p)])) -> hit = 1
					:: else ->
						if
						:: present(pte[p]) && (!w || dirty(pte[p])) ->
							tlb[TI(v, p)] = pte[p]; hit = 1
						:: else -> hit = 0
						fi
					fi
				};
				if
				:: hit ->
					/*
					 * The access itself (copy_small through the host
					 * pointer): in flight since the lookup, so a shootdown
					 * that began after the lookup still waits for it (the
					 * next access's request check acknowledges).
					 */
					d_step {
						c3_frame_current = frame(tlb[TI(v, p)]) == hostframe[p];
						assert(c3_frame_current);
						c1_tlb_backed = flushing[p] ||
							(present(pte[p]) &&
							 frame(pte[p]) == frame(tlb[TI(v, p)]) &&
							 (!w || dirty(pte[p])));
						assert(c1_tlb_backed);
						if
						:: w -> owed[p] = 1
						:: else
						fi;
						hit = 0
					};
					break
				:: else ->
					leave_guest(v);	/* xlate_fault() */
					mmu_fault(v, p, w);
					enter_guest(v)	/* XL_RETRY */
				fi
			od
		fi;
		atomic { op = 0; p = 0; w = 0 }
	};
	leave_guest(v)	/* the guest program returned: GPAMM_EXIT_DONE */
}

/* ---- host: one event that replaces the page at HPAGE (host/sim.c) --------- */

/*
 * A migration or a discard of the page's HVA: the notifier's start and end
 * around the host's change of its frame. get_page() may run at any point of
 * it (the sim host's mm lock would keep it out between start and end; Linux
 * does not), so the model covers both.
 */
proctype host()
{
	bit unmapped;
#ifdef FLUSH_MODE_FIRST
	bit seen0, seen1;
#endif
	/*
	 * mn_invalidate_range_start(): write lock, in_progress++ and the
	 * range, unmap the page's entry (for_each_hva_range), remote flush if
	 * one was there, unlock. Lock to unmap is one step: faults read the
	 * counter only under the lock, and a walker that reads the entry in
	 * between reads what it would read before.
	 */
	atomic {
		write_lock();
		in_progress++;
		inv_page = HPAGE;
		if
		:: present(pte[HPAGE]) -> pte[HPAGE] = 0; flushing[HPAGE] = 1; unmapped = 1
		:: else
		fi
	};
#ifndef NO_INV_FLUSH
	if
	:: unmapped -> flush_remote_tlbs()
	:: else
	fi;
#endif
	d_step { flushing[HPAGE] = 0; unmapped = 0; write_unlock() };

	/* the host changes the page: a new frame behind the HVA */
	hostframe[HPAGE] = NEWFRAME;

	/* mn_invalidate_range_end(): under the write lock, seq++ (release)
	 * and in_progress--; one step, as nothing reads them without the lock */
	atomic { write_lock(); inv_seq++; in_progress--; write_unlock() }
}

/* ---- VMM: dirty-log rounds (dirty.c) ------------------------------------- */

/*
 * One page of the harvest: take its bit (the exchange with 0) and
 * write-protect its entry if the bit was set (wp_word). NO_WP reports the
 * page and leaves its entry writable.
 */
inline harvest(p)
{
	if
	:: logbit[p] ->
		logbit[p] = 0; harvesting[p] = 1; taken = 1;
#ifndef NO_WP
		if
		:: dirty(pte[p]) -> pte[p] = pte[p] & ~DIRTY; flushing[p] = 1
		:: else
		fi
#endif
	:: else
	fi
}

/*
 * gpamm_vm_get_dirty_log() in classic mode (manual mode's CLEAR has the
 * same critical section for the pages it is given): under the write lock,
 * take each bit (exchange with 0), write-protect the entries whose bits
 * were set (wp_word -> gpamm_pgt_mkclean_mask), and flush when a bit was
 * taken (wp_finish), unlock. Lock, harvest and write-protect are one
 * step: no fault runs under the write lock, and a walker that reads the
 * entry in between reads what it would read before.
 */
proctype vmm()
{
	byte r;
	bit taken;
#ifdef FLUSH_MODE_FIRST
	bit seen0, seen1;
#endif

	for (r : 1 .. ROUNDS) {
		atomic { write_lock(); harvest(0); harvest(1) };
#ifndef NO_WP_FLUSH
		if
		:: taken -> flush_remote_tlbs()
		:: else
		fi;
#endif
		/* unlock and return: the VMM copies the reported pages after
		 * this, so every write before it is in this round's copy */
		d_step {
			if
			:: harvesting[0] -> owed[0] = 0
			:: else
			fi;
			if
			:: harvesting[1] -> owed[1] = 0
			:: else
			fi;
			harvesting[0] = 0; harvesting[1] = 0;
			flushing[0] = 0; flushing[1] = 0;
			taken = 0;
			write_unlock()
		}
	}
}

/* ---- the system ------------------------------------------------------------- */

/*
 * vCPU 0 stores to page 0, exits to the VMM and runs again, stores to
 * page 1 and to page 0 again (a writable TLB entry kept across a GET, an
 * exit or the host's event); vCPU 1 loads page 0 (racing vCPU 0's store
 * fault on the empty entry), loads page 1 and stores to page 0 (a
 * fast-path upgrade of a clean entry). -DPROG_0=... -DNOPS_0=... (and _1)
 * run other programs.
 */
#ifndef PROG_0
#define PROG_0	PROG4(W0, OP_EXIT, W1, W0)
#define NOPS_0	4
#endif
#ifndef PROG_1
#define PROG_1	PROG3(R0, R1, W0)
#define NOPS_1	3
#endif

init
{
	d_step { hostframe[0] = 1; hostframe[1] = 2 };
	atomic {
		run vcpu(0, PROG_0, NOPS_0);
		run vcpu(1, PROG_1, NOPS_1);
		run host();
		run vmm()
	};
	_nr_pr == 1;	/* every process has ended */
	d_step {
		/* contract 2's rest: a write not reported yet is still in the
		 * bitmap, for the next GET */
		c2_write_logged = (!owed[0] || logbit[0]) && (!owed[1] || logbit[1]);
		assert(c2_write_logged);
		/* every pin was put, every lock and invalidation ended */
		accounting_zero = pins == 0 && readers == 0 && writer == 0 && in_progress == 0;
		assert(accounting_zero)
	}
}
