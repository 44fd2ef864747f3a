// libjpeg-turbo's TurboJPEG API (2.1): JPEG decoding (baseline, progressive, grayscale, CMYK/YCCK) and encoding.
#include <turbojpeg.h>
