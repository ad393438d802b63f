package fhirtailor.hapiserver;

import ca.uhn.fhir.jpa.cache.IResourceTypeCacheSvc;
import ca.uhn.fhir.jpa.model.util.ResourceLinkUtils;
import org.springframework.beans.factory.SmartInitializingSingleton;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;

/**
 * Creates HAPI's "(unknown)" resource type row before the server takes requests.
 *
 * <p>HAPI fills its resource type table (HFJ_RESOURCE_TYPE) with the FHIR resource types when it
 * starts, but the pseudo-type {@link ResourceLinkUtils#UNKNOWN}, under which it indexes links to
 * canonical URLs (a CarePlan's {@code instantiatesCanonical}, for one), is created on first use
 * by whichever request needs it. Two first writes at once then both insert it: one violates the
 * unique index and its whole transaction is rolled back with HTTP 500. fhir-tailor writes
 * patients' plans concurrently, each naming its PlanDefinitions by canonical URL, so a fresh
 * server failed some of the first patients. Creating the row here, once and alone (beans of this
 * kind run after every singleton exists and before the web server starts), removes the race.
 */
@Configuration
public class ResourceTypeSeeding {

    @Bean
    public SmartInitializingSingleton unknownResourceTypeRow(IResourceTypeCacheSvc resourceTypes) {
        return () -> resourceTypes.getResourceTypeId(ResourceLinkUtils.UNKNOWN);
    }
}
