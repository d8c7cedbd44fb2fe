"""Speed benchmarks behind `seqbench bench ...`: scripts that print tables and write CSV (and
plots), never tests. kernels (the scan vs the CUDA reference), operators (vs attention and
convolution), models (training speed and memory), generation and generation_split, mamba_ssm
(our Mamba beside the authors' package)."""
