#include "proto/date.h"

#include <stdio.h>

size_t rfc5322_date(char buf[RFC5322_DATE_MAX], int64_t now, int tz_off_min)
{
	static const char wday[7][4] = {"Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"};
	static const char mon[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
					"Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	if (tz_off_min < -1439 || tz_off_min > 1439)
		tz_off_min = 0;
	int64_t t = now + (int64_t)tz_off_min * 60;
	int64_t days = t / 86400, secs = t % 86400;
	if (secs < 0) {
		secs += 86400;
		days--;
	}
	int64_t z = days + 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	int64_t doe = z - era * 146097;
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	int64_t mp = (5 * doy + 2) / 153;
	int64_t day = doy - (153 * mp + 2) / 5 + 1;
	int64_t month = mp < 10 ? mp + 3 : mp - 9;
	int64_t year = yoe + era * 400 + (month <= 2);
	int64_t wd = days % 7;
	if (wd < 0)
		wd += 7;
	int off = tz_off_min < 0 ? -tz_off_min : tz_off_min;
	int k = snprintf(buf, RFC5322_DATE_MAX, "%s, %d %s %04lld %02d:%02d:%02d %c%02d%02d",
			 wday[wd], (int)day, mon[month - 1], (long long)year, (int)(secs / 3600),
			 (int)(secs / 60 % 60), (int)(secs % 60), tz_off_min < 0 ? '-' : '+',
			 off / 60, off % 60);
	if (k < 0)
		return 0;
	return (size_t)k < RFC5322_DATE_MAX ? (size_t)k : RFC5322_DATE_MAX - 1;
}
