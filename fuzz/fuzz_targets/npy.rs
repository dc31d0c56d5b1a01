//! `.npy` noise files (`controlnet generate --noise`): any bytes. Whatever parses must hold as
//! many values as its shape says, and write back to the same values.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((shape, values)) = model::npy::read_f32(data) {
        assert_eq!(shape.iter().product::<usize>(), values.len());
        let again = model::npy::read_f32(&model::npy::write_f32(&shape, &values)).expect("our own file");
        assert_eq!(again.0, shape);
        assert!(again.1.iter().zip(&values).all(|(a, b)| a.to_bits() == b.to_bits()));
    }
});
