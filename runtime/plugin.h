/* Provider plugins: Lua files, loaded as text into their own environments,
 * checked field by field, and turned into provider instances. */
#ifndef FLEET_PLUGIN_H
#define FLEET_PLUGIN_H

#include <stddef.h>

struct fleet_host;

/* Loads every plugin from the installed providers folder, then from each
 * configured plugin path (a later file of the same name replaces an
 * earlier one), and creates host->providers: one instance per configured
 * provider, plus one per plugin no configured instance is named after.
 * Returns 0, or -1 with a message naming the file and field in err. */
int fleet_plugins_load(struct fleet_host *host, char *err, size_t errlen);

void fleet_plugins_free(struct fleet_host *host);

#endif
