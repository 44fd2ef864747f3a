// The slice of OpenBLAS that alexnet-mpi uses: CBLAS sgemm and the thread-count controls.
#include <cblas.h>
