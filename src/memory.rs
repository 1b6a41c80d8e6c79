//! What the server gives back once it has started.
//!
//! Measured on the reference server right after start (`/proc/PID/smaps`,
//! release build, Linux): 14 MiB resident, of which only 1.6 MiB anonymous
//! memory (heap, stacks, arenas) and 12.4 MiB pages of the executable
//! itself: 8.8 of its 12.6 MiB of code and 1.4 MiB of read-only data. Start
//! runs code that never runs again (the command line parser, migrations,
//! the OpenRPC document's schema generation, key loading, the docs page),
//! and the kernel maps each faulted page's neighbours with it
//! (`fault_around_bytes`, 64 KiB), so most of the binary ends up mapped.
//! Those pages are clean copies of the file: the page cache keeps them,
//! and they cost this process nothing but its page-table entries, yet they
//! are counted in its RSS.
//!
//! [`release_startup_pages`] drops them from this process's mappings once
//! the server serves (`madvise(MADV_DONTNEED)` on the executable's
//! read-only mappings that hold no anonymous page, i.e. that were never
//! written: code and read-only data, never the relocated `RELRO` part),
//! and gives back free heap (`malloc_trim`). The serving path faults back
//! the pages it uses, from the page cache (minor faults, at its first
//! calls). Allocator arenas were not the cause: glibc made one extra arena
//! at start (264 KiB resident).

/// Drops the executable's clean read-only pages from this process's
/// mappings and returns free heap to the system (see the module
/// documentation); returns the KiB that were resident in the mappings
/// dropped. Linux only; elsewhere it does nothing.
pub fn release_startup_pages() -> u64 {
    #[cfg(target_os = "linux")]
    {
        linux::release()
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

#[cfg(target_os = "linux")]
mod linux {
    /// One mapping of `/proc/self/smaps`.
    #[derive(Debug, Default)]
    struct Mapping {
        start: usize,
        end: usize,
        perms: String,
        path: String,
        rss_kib: u64,
        anonymous_kib: u64,
    }

    pub(super) fn release() -> u64 {
        let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
            return 0;
        };
        let exe = exe.to_string_lossy().into_owned();
        let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
            return 0;
        };
        let mut released = 0;
        for mapping in parse(&smaps) {
            // Only the executable's read-only mappings that were never
            // written (no anonymous page: a written page of a private
            // mapping becomes one): dropping one re-reads the same bytes
            // from the page cache at the next touch. (`Private_Dirty` may
            // count page-cache pages not yet written back, e.g. of a binary
            // just built: they are the file's bytes all the same.)
            let clean = mapping.anonymous_kib == 0;
            let read_only = mapping.perms.starts_with("r-") && mapping.perms.ends_with('p');
            if mapping.path != exe || !clean || !read_only || mapping.rss_kib == 0 {
                continue;
            }
            // SAFETY: the range is a whole mapping of this process, read
            // only and never written (checked above), so discarding its
            // pages only makes the next access read them from the file
            // again; no pointer into it becomes invalid.
            let done = unsafe {
                libc::madvise(
                    mapping.start as *mut libc::c_void,
                    mapping.end - mapping.start,
                    libc::MADV_DONTNEED,
                )
            };
            if done == 0 {
                released += mapping.rss_kib;
            }
        }
        // SAFETY: malloc_trim has no preconditions.
        unsafe {
            libc::malloc_trim(0);
        }
        released
    }

    fn parse(smaps: &str) -> Vec<Mapping> {
        let mut mappings: Vec<Mapping> = Vec::new();
        for line in smaps.lines() {
            let mut fields = line.split_whitespace();
            let Some(first) = fields.next() else { continue };
            if let Some((start, end)) = first.split_once('-').and_then(|(s, e)| {
                Some((
                    usize::from_str_radix(s, 16).ok()?,
                    usize::from_str_radix(e, 16).ok()?,
                ))
            }) {
                let perms = fields.next().unwrap_or("").to_owned();
                let path = fields.nth(3).unwrap_or("").to_owned();
                mappings.push(Mapping {
                    start,
                    end,
                    perms,
                    path,
                    ..Mapping::default()
                });
                continue;
            }
            let kib = || fields.clone().next().and_then(|v| v.parse::<u64>().ok());
            let Some(current) = mappings.last_mut() else {
                continue;
            };
            match first {
                "Rss:" => current.rss_kib = kib().unwrap_or(0),
                // Unknown counts are treated as dirty: the mapping is kept.
                "Anonymous:" => current.anonymous_kib = kib().unwrap_or(1),
                _ => {}
            }
        }
        mappings
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn reads_mappings_and_their_counts() {
            let smaps = "\
556530da7000-5565311ff000 r--p 00000000 fe:00 5702006                    /x/rpcguard
Size:               4448 kB
Rss:                1380 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
556531e88000-556531ef1000 r--p 010df000 fe:00 5702006                    /x/rpcguard
Rss:                 420 kB
Private_Dirty:       420 kB
Anonymous:           420 kB
";
            let maps = parse(smaps);
            assert_eq!(maps.len(), 2);
            assert_eq!(maps[0].start, 0x5565_30da_7000);
            assert_eq!(maps[0].perms, "r--p");
            assert_eq!(maps[0].path, "/x/rpcguard");
            assert_eq!((maps[0].rss_kib, maps[0].anonymous_kib), (1380, 0));
            assert_eq!(maps[1].anonymous_kib, 420);
        }

        #[test]
        fn releasing_keeps_the_process_working() {
            let released = release();
            // Code still runs and read-only data still reads after it.
            let text = format!("{}", 6 * 7);
            assert_eq!(text, "42");
            assert!(released < 1 << 30);
        }
    }
}
