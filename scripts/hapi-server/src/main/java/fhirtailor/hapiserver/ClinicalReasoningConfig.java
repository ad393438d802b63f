package fhirtailor.hapiserver;

import org.cqframework.cql.cql2elm.CqlCompilerOptions;
import org.cqframework.cql.cql2elm.LibraryBuilder;
import org.opencds.cqf.fhir.cql.EvaluationSettings;
import org.opencds.cqf.fhir.cql.engine.terminology.TerminologySettings;
import org.opencds.cqf.fhir.cr.hapi.config.RepositoryConfig;
import org.opencds.cqf.fhir.cr.hapi.config.r4.ApplyOperationConfig;
import org.opencds.cqf.fhir.utility.client.TerminologyServerClientSettings;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.context.annotation.Import;

/**
 * Clinical reasoning: {@code PlanDefinition/$apply} (and {@code ActivityDefinition/$apply}).
 *
 * <p>HAPI's own {@code hapi-fhir-storage-cr} module was deprecated in HAPI 8.1.4 and is not
 * published after 8.2; its successor is {@code cqf-fhir-cr-hapi} from the clinical-reasoning
 * project, whose release 4.4.0 is built against HAPI 8.8.0 (the version used here).
 *
 * <ul>
 *   <li>{@link RepositoryConfig} lets the CQL engine read resources (the subject, ValueSets,
 *       Libraries) through the JPA DAOs of this server.
 *   <li>{@link ApplyOperationConfig} creates the {@code $apply} providers and registers them on
 *       the {@code RestfulServer} bean once the context is refreshed.
 * </ul>
 *
 * <p>Applicability conditions ({@code PlanDefinition.action.condition}, language
 * {@code text/fhirpath} or {@code text/cql-expression}) are compiled as a one-expression CQL
 * library in Patient context, so {@code Patient} is the subject and {@code %context} the
 * PlanDefinition.
 */
@Configuration
@Import({RepositoryConfig.class, ApplyOperationConfig.class})
public class ClinicalReasoningConfig {

    /**
     * The CQL engine's defaults, except terminology: ValueSets stored on this server are expanded
     * by the engine itself from their {@code compose} (or their stored {@code expansion} when
     * present) and membership is checked against that expansion. The default (AUTO) calls
     * {@code ValueSet/$expand} through the server, and HAPI then writes that operation's answer
     * as the response of the whole {@code $apply} request.
     */
    @Bean
    public EvaluationSettings evaluationSettings() {
        EvaluationSettings settings = EvaluationSettings.getDefault();
        // Compiled for evaluation only: no annotations (the source narrative of every node),
        // locators or overload signatures in the ELM. fhir-tailor's condition libraries hold
        // defines of a few hundred kilobytes of CQL; with the defaults (all three on) compiling
        // them exhausts a 2 GB heap.
        CqlCompilerOptions compiler = settings.getCqlOptions().getCqlCompilerOptions();
        compiler.getOptions().remove(CqlCompilerOptions.Options.EnableAnnotations);
        compiler.getOptions().remove(CqlCompilerOptions.Options.EnableLocators);
        compiler.setSignatureLevel(LibraryBuilder.SignatureLevel.None);
        TerminologySettings terminology = settings.getTerminologySettings();
        terminology.setValuesetExpansionMode(
                TerminologySettings.VALUESET_EXPANSION_MODE.PERFORM_NAIVE_EXPANSION);
        terminology.setValuesetMembershipMode(
                TerminologySettings.VALUESET_MEMBERSHIP_MODE.USE_EXPANSION);
        terminology.setValuesetPreExpansionMode(
                TerminologySettings.VALUESET_PRE_EXPANSION_MODE.USE_IF_PRESENT);
        terminology.setCodeLookupMode(TerminologySettings.CODE_LOOKUP_MODE.USE_CODESYSTEM_URL);
        return settings;
    }

    /** Required by the CR settings; only used for ValueSets that name an outside server. */
    @Bean
    public TerminologyServerClientSettings terminologyServerClientSettings() {
        return TerminologyServerClientSettings.getDefault();
    }
}
