//! The address file (`AddrFile`): what one read of the file yields.
//!
//! Contract checked: no panic; a yielded list names each address once; the list, written back
//! as a file, reads back the same; and no proper prefix of a file (a read that caught a write
//! half-way) yields other addresses than the whole file (the `AddrFile` docs, "What a writer
//! must do").

use portcullis_discovery::fuzzing::addr_file;
use std::collections::HashSet;
use std::fmt::Write;

/// Fragments the random campaign splices into its inputs.
#[allow(dead_code)]
pub(crate) const TOKENS: &[&[u8]] = &[
    b"# end\n",
    b"# end",
    b"\n",
    b"\r\n",
    b"#",
    b" ",
    b"\t",
    b"10.0.0.1:8080\n",
    b"[::1]:80\n",
    b"[fe80::1%eth0]:80\n",
    b":",
    b"[",
    b"]",
    b"65535",
    b"65536",
    b"0",
    b"255.255.255.255",
    b"\xc2\x85",
    b"\xe2\x80\x83",
    b"\0",
];

/// Prefixes are all re-read for inputs up to this long (quadratic; the fuzzer's inputs are
/// shorter: `fuzz/run` passes `-max_len=1024`).
const PREFIX_CHECK_MAX: usize = 1024;

pub(crate) fn check(data: &[u8]) {
    // A file that is not UTF-8 fails `read_to_string` and is never parsed.
    let Ok(contents) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(addrs) = addr_file(contents) else {
        return;
    };
    let unique: HashSet<_> = addrs.iter().collect();
    assert_eq!(unique.len(), addrs.len(), "an address twice: {contents:?}");

    let mut rewritten = String::new();
    for addr in &addrs {
        let _ = writeln!(rewritten, "{addr}");
    }
    rewritten.push_str("# end\n");
    assert_eq!(
        addr_file(&rewritten).as_ref(),
        Ok(&addrs),
        "written back, {contents:?} reads differently"
    );

    if contents.len() <= PREFIX_CHECK_MAX {
        for (cut, _) in contents.char_indices() {
            if let Ok(other) = addr_file(&contents[..cut]) {
                assert_eq!(
                    other,
                    addrs,
                    "the prefix {:?} of {contents:?} is complete with other addresses",
                    &contents[..cut]
                );
            }
        }
    }
}
