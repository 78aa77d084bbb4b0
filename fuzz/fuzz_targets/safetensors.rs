#![no_main]
softcot_fuzz::target!("safetensors");
