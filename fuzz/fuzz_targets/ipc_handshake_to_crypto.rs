#![no_main]
// The checks are wgd_fuzz_harness::ipc_handshake_to_crypto's; whether the input was valid
// matters to the seed generator only.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    wgd_fuzz_harness::ipc_handshake_to_crypto(data);
});
