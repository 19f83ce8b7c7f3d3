#![no_main]
// The checks are wgd_fuzz_harness::uapi_request's; whether the input was valid
// matters to the seed generator only.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    wgd_fuzz_harness::uapi_request(data);
});
