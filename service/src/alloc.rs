//! Every service binary allocates through mimalloc instead of the system allocator.
//!
//! Why: an event crosses threads on every path (a gateway call's worker and the recorder, an
//! export's reader and encoder, the auditor's consumer and writer), so memory allocated on one
//! thread is freed on another. glibc's malloc pays for that in its arena locks and
//! consolidation: profiles of the gateway and of an export spent 12 % and 28 % of their CPU in
//! malloc/free (BENCHMARKS.md, issue 20). A global allocator is chosen once per binary, and
//! defining it here, in the crate every service links, makes it one choice for all of them.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
