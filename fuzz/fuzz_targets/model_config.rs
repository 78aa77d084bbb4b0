#![no_main]
softcot_fuzz::target!("model_config");
