/* Real mode (boot-sector form): called from boot16.S with CS=DS=SS=0. */
#include "ring0.h"

void main16(void)
{
	serial_init();
	rpt_header("bootsector");
	rpt_section_begin("real");
	runtime_reset();
	enumerate_all();
	runtime_experiments();
	rpt_section_end();
}
