// What Swift cannot import from mpi.h by itself: the predefined handles (macros over global objects in Open MPI)
// and MPI_STATUS(ES)_IGNORE, as static inline functions, and the shared-memory window calls with their void** bases; and glibc's mallopt, which the collectives' scratch
// buffers need (MallocTuning) and Swift's Glibc module leaves out.
#include <mpi.h>
#include <malloc.h>

static inline int shim_keep_heap_blocks_below(int mmap_threshold, int trim_threshold) {
    return mallopt(M_MMAP_THRESHOLD, mmap_threshold) && mallopt(M_TRIM_THRESHOLD, trim_threshold);
}

static inline MPI_Comm shim_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Comm shim_comm_null(void) { return MPI_COMM_NULL; }
static inline MPI_Datatype shim_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype shim_double(void) { return MPI_DOUBLE; }
static inline MPI_Datatype shim_uint64(void) { return MPI_UINT64_T; }
static inline MPI_Datatype shim_int64(void) { return MPI_INT64_T; }
static inline MPI_Datatype shim_char(void) { return MPI_CHAR; }
static inline MPI_Datatype shim_int(void) { return MPI_INT; }
static inline MPI_Op shim_sum(void) { return MPI_SUM; }
static inline MPI_Op shim_max(void) { return MPI_MAX; }
static inline MPI_Op shim_min(void) { return MPI_MIN; }
static inline MPI_Errhandler shim_errors_return(void) { return MPI_ERRORS_RETURN; }
static inline MPI_Status *shim_status_ignore(void) { return MPI_STATUS_IGNORE; }
static inline MPI_Status *shim_statuses_ignore(void) { return MPI_STATUSES_IGNORE; }
static inline MPI_Request shim_request_null(void) { return MPI_REQUEST_NULL; }
static inline void *shim_in_place(void) { return MPI_IN_PLACE; }
static inline int shim_success(void) { return MPI_SUCCESS; }
static inline int shim_max_error_string(void) { return MPI_MAX_ERROR_STRING; }
static inline int shim_any_source(void) { return MPI_ANY_SOURCE; }
static inline int shim_undefined(void) { return MPI_UNDEFINED; }
static inline int shim_comm_type_shared(void) { return MPI_COMM_TYPE_SHARED; }
static inline MPI_Info shim_info_null(void) { return MPI_INFO_NULL; }

/// MPI_Win_allocate_shared of `bytes` (floats: displacement unit 4) over `comm`: this rank's segment at *base.
static inline int shim_win_allocate_shared(MPI_Comm comm, MPI_Aint bytes, MPI_Win *win, void **base) {
    return MPI_Win_allocate_shared(bytes, 4, MPI_INFO_NULL, comm, base, win);
}

/// Where rank `rank`'s segment of a shared window lies in this process (MPI_Win_shared_query).
static inline int shim_win_shared_query(MPI_Win win, int rank, void **base) {
    MPI_Aint size = 0;
    int unit = 0;
    return MPI_Win_shared_query(win, rank, &size, &unit, base);
}

/// The largest message tag this MPI accepts (the MPI_TAG_UB attribute of `comm`; the standard guarantees at least
/// 32767), or 32767 if the attribute is missing. Returns an MPI error code.
static inline int shim_tag_upper_bound(MPI_Comm comm, int *upper) {
    int *value = 0, flag = 0;
    int code = MPI_Comm_get_attr(comm, MPI_TAG_UB, &value, &flag);
    if (code != MPI_SUCCESS) return code;
    *upper = (flag && value) ? *value : 32767;
    return MPI_SUCCESS;
}
