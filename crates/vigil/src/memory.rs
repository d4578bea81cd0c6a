//! vigil's resident memory: it runs for months beside the agents it watches, so memory it
//! used once (a burst of starts, a reload) should go back to the system.

/// glibc gives every thread that allocates an arena of its own (up to 8 per core), each
/// keeping memory it once used; vigil's threads allocate little and rarely, so two shared
/// arenas keep its resident memory down at no measurable cost.
///
/// And a fixed threshold above which blocks are mapped on their own (and unmapped when
/// freed): glibc raises it to the size of any large block freed, up to 32 MB, after which a
/// scrape's 15 MB of metrics text (10,000 agents) lives in the heap and stays resident once
/// freed — seen doubling vigil's memory after one scrape.
pub fn limit_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets a tunable; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

/// Hand freed heap pages back after a burst (starting a fleet allocates and frees a lot).
pub fn release_free() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
