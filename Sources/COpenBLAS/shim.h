// The slice of OpenBLAS that alexnet-mpi uses: CBLAS sgemm and the thread-count controls, and LAPACK's ssyev (the
// symmetric eigen-decomposition of the colour covariance; Debian's libopenblas exports the LAPACK symbols).
#include <cblas.h>
#include <stddef.h>

// LAPACK ssyev (Fortran, gfortran's ABI): the two trailing arguments are the hidden lengths of the character arguments
// jobz and uplo, which gfortran-compiled code may read (declaring them is what LAPACKE's lapack.h does).
void ssyev_(const char *jobz, const char *uplo, const int *n, float *a, const int *lda, float *w, float *work,
            const int *lwork, int *info, size_t jobz_length, size_t uplo_length);
