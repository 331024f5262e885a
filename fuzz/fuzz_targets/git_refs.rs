#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    dvc_exec::fuzzing::git_refs(data);
});
