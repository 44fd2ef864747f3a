// The library's users (the command line, the MPI layer, the tests) see the kernels and layers through AlexNet.
@_exported import AlexNetKernels
