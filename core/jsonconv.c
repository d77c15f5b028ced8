/* placeholder: replaced by the real conversion code */
#include "jsonconv.h"
