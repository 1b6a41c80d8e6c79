//! What the binary sets for the whole process at start.

/// Raises this process's open-file soft limit to its hard limit (Unix) and
/// returns the new soft limit. Call it once at start, before the server
/// starts: it caps connections below the limit in force
/// ([`rpcguard::ServerConfig::max_connections`]).
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit write/read the struct we pass.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if limit.rlim_cur < limit.rlim_max {
                let before = limit.rlim_cur;
                limit.rlim_cur = limit.rlim_max;
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                tracing::info!(
                    from = before,
                    to = limit.rlim_cur,
                    "raised the open-file limit"
                );
            }
        }
        Ok(limit.rlim_cur)
    }
    #[cfg(not(unix))]
    Ok(u64::MAX)
}
