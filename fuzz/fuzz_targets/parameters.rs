//! A PNG's `parameters` text (A1111's format: a dropped image or a gallery record): any text.
//! What parses must write back to a text that reads back to the same settings (prompts, sampler,
//! seed, size, units…), and reading and writing again changes nothing more: the first write may
//! only normalise (blank lines around a prompt, spaces around an unknown key's value).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vocabulary::a1111::Parameters;

/// What a generation uses (Debug: NaN settings compare equal to themselves).
fn settings(p: &Parameters) -> String {
    format!("{:?} {:?} {:?} {:?} {:?}", p.params, p.has_seed, p.model, p.precision, p.units)
}

fuzz_target!(|text: &str| {
    if let Ok(once) = Parameters::parse(text) {
        let written = once.to_text();
        let twice = Parameters::parse(&written).expect("our own text parses");
        assert_eq!(settings(&twice), settings(&once));
        let rewritten = twice.to_text();
        assert_eq!(Parameters::parse(&rewritten).expect("parses").to_text(), rewritten);
    }
});
