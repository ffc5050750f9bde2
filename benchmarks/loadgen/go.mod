module ssebench/loadgen

go 1.19
