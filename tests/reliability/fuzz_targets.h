// The parsers of outside input, one entry point per file format, shared by the fuzz suite
// (test_fuzz.cpp), the sanitizer build and the libFuzzer harness (fuzz_libfuzzer.cpp).
// run_target() loads the file the way kvx does and uses what it loaded a little (loads every
// tensor, encodes a text, reads every predictor); it returns normally or throws kvx::Error.
// Anything else escaping is a bug.
#pragma once
#include <string>
#include <vector>

namespace kvx::fuzz {

enum class Format { Safetensors, ConfigJson, TokenizerJson, Yaml, Hdf5, IndexJson };

struct FormatInfo {
  Format format;
  const char* name;       // for messages
  const char* file_name;  // what the input file is called (parsers look at names)
};
const std::vector<FormatInfo>& formats();

// Loads `path` (named formats()[..].file_name inside its own folder).
void run_target(Format f, const std::string& path);

// Before forking children: warm caches that every case would otherwise rebuild (sweep configs
// hash the model files they name).
void warm_up(const std::string& source_dir);

}  // namespace kvx::fuzz
